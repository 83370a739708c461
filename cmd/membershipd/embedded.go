package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
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
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
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
	log.Info("embedded nats-server started", "url", s.ClientURL(), "data_dir", cfg.DataDir, "sync", cfg.Sync)
	return &embeddedServer{s}, nil
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
