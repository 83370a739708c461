package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

type embeddedServer struct{ *server.Server }

// embeddedMaxPayload lets a rekey of a 10,000-member room (about 1 MB of
// sealed keys) fit in one request.
const embeddedMaxPayload = 8 << 20

// startEmbedded starts an in-process nats-server with JetStream in
// cfg.DataDir, listening on cfg.Listen.
func startEmbedded(cfg *Config, log *slog.Logger) (*embeddedServer, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: bad port", cfg.Listen)
	}
	if err := checkListen("--listen", cfg.Listen); err != nil {
		return nil, err
	}
	if cfg.ClusterListen != "" {
		if err := checkListen("--cluster-listen", cfg.ClusterListen); err != nil {
			return nil, err
		}
	}
	opts := &server.Options{
		ServerName: "membershipd-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		MaxPayload: embeddedMaxPayload,
		NoSigs:     true,
	}
	// Durability: with "always" every acknowledged JetStream write is
	// fsynced before the ack, so a power loss cannot lose an acknowledged
	// mutation or nonce (Jepsen lost acknowledged writes under the default
	// 2-minute interval). An interval trades that for throughput.
	if cfg.Sync == "always" {
		opts.SyncAlways = true
	} else {
		opts.SyncInterval, _ = time.ParseDuration(cfg.Sync)
	}
	if cfg.ServerName != "" {
		opts.ServerName = cfg.ServerName
	}
	if cfg.Routes != "" {
		if err := clusterOptions(cfg, opts); err != nil {
			return nil, err
		}
	}
	if err := cfg.Bus.configureEmbedded(opts); err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	s.SetLoggerV2(slogAdapter{log.With("component", "nats-server")}, false, false, false)
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not start on %s", cfg.Listen)
	}
	if cfg.Routes != "" {
		// A cluster node serves clients before JetStream has a meta
		// leader; wait for one so that the buckets can be opened.
		deadline := time.Now().Add(2 * time.Minute)
		for !s.JetStreamIsCurrent() {
			if time.Now().After(deadline) {
				s.Shutdown()
				return nil, fmt.Errorf("JetStream cluster formed no meta leader; check --routes")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	log.Info("embedded nats-server started", "url", s.ClientURL(), "data_dir", cfg.DataDir, "sync", cfg.Sync)
	return &embeddedServer{s}, nil
}

// clusterOptions makes the embedded server one node of a route-connected
// JetStream cluster.
func clusterOptions(cfg *Config, opts *server.Options) error {
	host, portStr, err := net.SplitHostPort(cfg.ClusterListen)
	if err != nil {
		return fmt.Errorf("--cluster-listen %q: %w", cfg.ClusterListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--cluster-listen %q: bad port", cfg.ClusterListen)
	}
	opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
	opts.Routes = server.RoutesFromStr(cfg.Routes)
	if len(opts.Routes) == 0 {
		return fmt.Errorf("--routes %q: no route URL", cfg.Routes)
	}
	return nil
}

func (e *embeddedServer) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// slogAdapter routes nats-server's log lines to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
