package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/subjects"
)

// How long a starting replica listens for the running ones' micro info: the
// first answer within infoWait, further ones while they keep coming within
// infoStall of each other.
const (
	infoWait  = 2 * time.Second
	infoStall = 250 * time.Millisecond
)

// agreeServiceKey refuses to serve when the replicas already running under
// the same subject prefix sign with another service key than ours: clients
// pin one key, so a replica with another would have its replies refused
// (and its audit entries break the chain). Replicas started at the very
// same moment can still miss each other; `nats micro info` shows each one's
// key, and docs/deploy.md checks that there is one.
func agreeServiceKey(ctx context.Context, nc *nats.Conn, cfg *Config, log *slog.Logger) error {
	if cfg.Service.ServiceKey == nil {
		return nil
	}
	ours, err := cfg.Service.ServiceKey.PublicKey()
	if err != nil {
		return err
	}
	infos, err := runningReplicas(ctx, nc)
	if err != nil {
		return fmt.Errorf("ask the running replicas for their service key: %w", err)
	}
	for _, in := range infos {
		if in.Metadata["prefix"] != cfg.Service.Prefix {
			continue
		}
		if theirs := in.Metadata["service_key"]; theirs != ours {
			return fmt.Errorf("the running replicas (e.g. instance %s on host %q, pid %s) sign with service key %s, but --service-key %s holds %s: give every replica the same key file",
				in.ID, in.Metadata["host"], in.Metadata["pid"], theirs, cfg.ServiceKey, ours)
		}
	}
	log.Info("service key agrees with the running replicas", "instances", len(infos), "service_key", ours)
	return nil
}

// runningReplicas gathers the micro info of every running instance of the
// service.
func runningReplicas(ctx context.Context, nc *nats.Conn) ([]micro.Info, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	subject, err := micro.ControlSubject(micro.InfoVerb, subjects.ServiceName, "")
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	var infos []micro.Info
	for wait := infoWait; ; wait = infoStall {
		msg, err := sub.NextMsgWithContext(withTimeout(ctx, wait))
		if err != nil || len(msg.Data) == 0 { // timeout, or no responders (status only)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return infos, nil
		}
		var in micro.Info
		if json.Unmarshal(msg.Data, &in) == nil {
			infos = append(infos, in)
		}
	}
}

// withTimeout is ctx ending after d at the latest; its timer ends with it.
func withTimeout(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(c, cancel)
	return c
}

// processMetadata is the daemon's micro metadata beside the service's own
// (which adds host, pid and version).
func processMetadata(cfg *Config) map[string]string {
	return map[string]string{"bucket": cfg.Bucket, "keys_bucket": cfg.KeysBucket, "replicas": strconv.Itoa(cfg.Replicas)}
}
