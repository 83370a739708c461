// Command membershipd serves the unibus membership service.
//
// With no NATS URL or context it starts an embedded nats-server with
// JetStream on loopback, keeping its data in --data-dir, and bootstraps a
// first admin identity file there. Given --server or --context it joins an
// existing deployment. Every flag can also be set through the environment
// variable named in --help; flags win over the environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "membershipd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cfg, done, err := parseFlags(args, stdout, stderr)
	if done || err != nil {
		return err
	}
	if cfg.PrintConfig {
		return printConfig(stdout, cfg.app)
	}
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	embeddedMode := cfg.Embedded()
	if embeddedMode {
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		embedded, err := startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		defer embedded.Shutdown()
		cfg.Conn.Server = embedded.ClientURL()
	}
	nc, err := connect(ctx, cfg, "membershipd", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	// The caches' watches load every key at start: on a connection of
	// their own, so that the requests' replies do not queue behind them
	// (store.Config.WatchJS).
	wnc, err := connect(ctx, cfg, "membershipd watches", log)
	if err != nil {
		return err
	}
	defer wnc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	wjs, err := jetstream.New(wnc)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := openStore(octx, js, wjs, cfg, log)
	if err != nil {
		return fmt.Errorf("open buckets: %w", err)
	}
	if st.CreatedShards() {
		spreadLeaders(octx, st, log)
	}
	if cfg.BootstrapAdmin != "" {
		if err := retry(octx, log, "bootstrap admin", unavailable, func() error { return bootstrapAdmin(octx, st, cfg, log) }); err != nil {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
	}
	cfg.Service.Logger = log
	if err := setServiceKey(cfg, embeddedMode); err != nil {
		return err
	}
	if err := agreeServiceKey(ctx, nc, cfg, log); err != nil {
		return err
	}
	cfg.Service.Metadata = processMetadata(cfg)
	cfg.Service.Metadata["room_shards"] = strconv.Itoa(st.RoomShards()) // as the deployment was created
	bus, err := startBus(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer bus.stop()
	svc, err := service.Start(nc, st, cfg.Service)
	if err != nil {
		return err
	}
	if err := bus.serve(nc, svc); err != nil {
		return err
	}
	sweepDone := make(chan struct{})
	if cfg.SweepInterval > 0 {
		go func() {
			defer close(sweepDone)
			service.RunSweeper(ctx, st, cfg.SweepInterval, cfg.SweepGrace, log.With("component", "sweep"))
		}()
	} else {
		close(sweepDone)
	}
	log.Info("membershipd ready", "nats", nc.ConnectedUrlRedacted(), "prefix", cfg.Service.Prefix,
		"queue", cfg.Service.QueueGroup, "auth", cfg.Service.Auth, "bus", cfg.Bus.Mode, "embedded", embeddedMode, "service_key", svc.PublicKey())
	fmt.Fprintf(stdout, "membershipd ready on %s (subjects %s.*)\n", nc.ConnectedUrlRedacted(), cfg.Service.Prefix)

	<-ctx.Done()
	log.Info("draining: finishing in-flight requests, taking no new ones")
	if err := svc.Stop(); err != nil {
		log.Warn("stop service", "error", err)
	}
	<-sweepDone // ctx is done: the sweeper returns
	if err := nc.Drain(); err != nil {
		log.Warn("drain connection", "error", err)
	}
	for nc.IsDraining() {
		time.Sleep(10 * time.Millisecond)
	}
	log.Info("stopped")
	return nil
}

// defaultConnectWait is how long start-up retries to reach NATS by default:
// long enough for a whole cluster restarting at once to come back.
const defaultConnectWait = 2 * time.Minute

// connect dials the deployment, retrying while no server answers yet (a
// replica may start before the nodes) for at most --connect-wait. Errors
// that another try cannot fix, such as a refused user, end it at once.
func connect(ctx context.Context, cfg *Config, name string, log *slog.Logger) (*nats.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectWait)
	defer cancel()
	var nc *nats.Conn
	err := retry(ctx, log, "connect to NATS", func(err error) bool { return errors.Is(err, nats.ErrNoServers) }, func() error {
		var err error
		nc, err = cfg.Conn.Connect(append(cfg.Bus.connOptions(), nats.Name(name), nats.MaxReconnects(-1))...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to NATS (%s, tried for up to --connect-wait %s): %w", cfg.Conn.Describe(), cfg.ConnectWait, err)
	}
	return nc, nil
}

// openStore opens the buckets, waiting while JetStream is not ready yet (a
// cluster that is still electing its meta leader). A bucket with other
// settings is final.
func openStore(ctx context.Context, js, watchJS jetstream.JetStream, cfg *Config, log *slog.Logger) (*store.Store, error) {
	var st *store.Store
	err := retry(ctx, log, "open buckets", func(err error) bool { return !errors.Is(err, store.ErrBucketConfig) }, func() error {
		octx, cancel := context.WithTimeout(ctx, 4*time.Second)
		defer cancel()
		var err error
		st, err = store.Open(octx, js, store.Config{
			Bucket: cfg.Bucket, KeysBucket: cfg.KeysBucket, Replicas: cfg.Replicas,
			MaxTTL: service.NonceTTL(cfg.Service.Skew), Shards: cfg.Shards, NewShards: DefaultShards,
			WatchJS: watchJS,
		})
		return err
	})
	return st, err
}

// spreadWait bounds the wait for new room shards' leaders and followers
// before their leaders are spread (a new stream elects within seconds).
const spreadWait = 15 * time.Second

// spreadLeaders moves the leaders of new room shards apart (store.SpreadLeaders): a new stream's leader is drawn at random,
// so a new deployment's shards may all be led by one node. A failure only
// costs speed, so it is logged, with the commands that do it by hand.
func spreadLeaders(ctx context.Context, st *store.Store, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, spreadWait)
	defer cancel()
	moves, err := st.SpreadLeaders(ctx)
	for _, m := range moves {
		log.Info("room shard leader moved", "stream", m.Stream, "from", m.From, "to", m.To)
	}
	if err != nil {
		log.Warn("room shard leaders not spread; see docs/deploy.md \"Shards\" to move them", "error", err)
	}
}

// unavailable reports errors that mean JetStream is not available yet (a
// cluster node that rejoins before its peers have elected leaders).
func unavailable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		(errors.As(err, &apiErr) && apiErr.Code == 503)
}

// retry runs f again, with a growing pause, while it fails with an error
// that again says is worth another try, until ctx ends.
func retry(ctx context.Context, log *slog.Logger, what string, again func(error) bool, f func() error) error {
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := f()
		if err == nil || !again(err) {
			return err
		}
		log.Info("not ready, retrying", "step", what, "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// bootstrapAdmin makes sure the identity in cfg.BootstrapAdmin is a
// registered admin, generating the file first if it does not exist.
func bootstrapAdmin(ctx context.Context, st *store.Store, cfg *Config, log *slog.Logger) error {
	id, err := identity.Load(cfg.BootstrapAdmin)
	if errors.Is(err, os.ErrNotExist) {
		if id, err = identity.New(cfg.AdminEndpoint); err != nil {
			return err
		}
		if err = identity.Write(cfg.BootstrapAdmin, id); err != nil {
			return err
		}
		log.Info("generated admin identity file", "path", cfg.BootstrapAdmin, "endpoint", id.Endpoint)
	}
	if err != nil {
		return err
	}
	pub, err := id.Public()
	if err != nil {
		return err
	}
	created, err := service.Bootstrap(ctx, st, pub)
	if err != nil {
		return err
	}
	if created {
		log.Info("registered admin", "endpoint", pub.Endpoint, "identity_file", cfg.BootstrapAdmin)
	}
	return nil
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
