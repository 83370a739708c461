// Command memberbench measures the membership service against the NATS
// limits beneath it, in one run and with one client harness.
//
// It starts an embedded single-node nats-server with JetStream (file
// storage in a temporary directory, --sync as membershipd) or connects to
// --nats-url, starts a service replica in-process (unless --external),
// seeds identities, rooms and members, then drives --clients concurrent
// clients, each on its own connection and signing as its own identity with
// the real client package, through:
//
//	echo    a plain micro echo endpoint on the same server (transport limit)
//	secho   signed echo: a room get checked as the service checks it and
//	        answered signed, without the store (the crypto floor; signedecho.go)
//	read    room get                      (signed, verified, nonce claimed)
//	key     my sealed key (room key)
//	mine    list my rooms (first page)
//	kv      raw KV Create with TTL         (a durable claim; reads claim in memory)
//	mutate  add member                     (one atomic batch of 6 writes; --shards room shards)
//	mutate1 the same add-member load against a deployment of one room
//	        shard on the same server (its own buckets and service)
//	read1, mine1 (only with --ops) read and mine against that deployment
//	batch   raw atomic batch of 6 writes   (the durable-write limit of one stream)
//	obj     raw sealed-key object put      (the write every add-member makes
//	        before its batch, in the one object store; run it with --ops)
//	batchN  the same raw batches spread over the deployment's room shards
//	        (the durable-write limit of --shards streams)
//
// It prints a table (ops/s, p50, p99, p99.9, errors), checks that micro's
// own stats (the $SRV.STATS answers `nats micro stats` shows) counted
// exactly the requests and errors the benchmark sent and saw, and ends with
//
//	RATIOS read_vs_echo=0.00 key_vs_echo=0.00 mutate_vs_batch=0.00 read_vs_signed_echo=0.00 mutate_shards_vs_one=0.00
//
// preceded, with --quick or --bus, by the bus's figures (bus.go):
//
//	BUS revoke_p99_ms=N connect_p99_ms=N
//
// Scale runs (scale.go): --rooms-per-client N seeds a layout in which every
// client belongs to exactly N rooms whatever --rooms is, the other rooms
// being owned and filled by the other identities; --state FILE keeps what
// was seeded (identity seeds, rooms) so that a deployment seeded once
// against --nats-url (--seed-only) can be measured again after a restart,
// or seeded further; --big-room times member-list pages of a large room
// against --small-room's; --pid reports an external daemon's RSS; and
// --probe-ready times a daemon's startup to its first signed answer.
//
// See the README section "Benchmark" and docs/performance.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/term"
)

type options struct {
	natsURL   string
	external  bool
	sync      string
	shards    int    // room shards of a deployment the run creates
	cluster   int    // nodes of an in-process JetStream cluster (cluster.go); 0: one node
	bucket    string // base bucket ("": the default); the one-shard deployment's own
	quick     bool
	clients   int
	duration  time.Duration
	count     int
	mutations int

	identities int
	rooms      int
	members    int
	rekey      int

	workers    int
	idCache    bool
	keyCache   bool
	unverified bool // measured clients opt out of reply verification
	roomIndex  bool
	maxStale   time.Duration
	prefix     string
	ops        string
	cpuProfile string

	// scale layout (scale.go)
	roomsPerClient int
	state          string
	seedOnly       bool
	seedWorkers    int
	bigRoom        int
	smallRoom      int
	pid            int
	probe          bool
	pages          bool
	adminFile      string

	bus            bool   // bus.go: the callout's revocation and connect figures
	busEndpoints   int    // bus.go: connected endpoints, 0: the scale's
	busRounds      int    // bus.go: measurement rounds after one seeding, 0: the scale's
	busCluster     bool   // buscluster.go: only the revocation on a 3-node cluster
	busClusterConf string // buscluster.go: the documented cluster's config files

	channelMsgs int // channel.go: messages per throughput run, 0: the scale's
}

func main() {
	o := options{}
	flag.StringVar(&o.natsURL, "nats-url", "", "connect to this deployment instead of starting an embedded server")
	flag.BoolVar(&o.external, "external", false, "with --nats-url: benchmark the replicas already running there (no in-process service; they must not rate-limit)")
	flag.StringVar(&o.sync, "sync", "always", "embedded server fsync policy: always (membershipd's default), interval (the NATS default, 2m) or a duration such as 1s")
	flag.IntVar(&o.shards, "shards", defaultShards, "room shards of the deployment the benchmark creates (an existing one keeps its own); mutate1 measures the same add-member load against one shard")
	flag.IntVar(&o.cluster, "cluster", 0, "start a JetStream cluster of this many in-process nodes (3 or 5) on loopback instead of one node: buckets replicated on every node, the room shards' leaders spread over the nodes by step-down, clients connected at random nodes (0: one node)")
	flag.BoolVar(&o.quick, "quick", false, "small seed and short runs; finishes within a minute")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients, each on its own connection with its own identity")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long each read-type operation runs (when --count is 0)")
	flag.IntVar(&o.count, "count", 0, "calls per read-type operation in all clients together (0: run for --duration)")
	flag.IntVar(&o.mutations, "mutations", 2000, "add-member calls (and raw batches) in all clients together")
	flag.IntVar(&o.identities, "identities", 1000, "identities to seed (at least --clients + 1)")
	flag.IntVar(&o.rooms, "rooms", 1000, "rooms to seed, owned round-robin by the clients")
	flag.IntVar(&o.members, "members", 4, "members per seeded room, the owner included")
	flag.IntVar(&o.rekey, "rekey", 0, "also time the rekey of a room with this many members (needs that many identities)")
	flag.IntVar(&o.workers, "workers", 4, "in-process service: micro instances (Config.Workers)")
	flag.BoolVar(&o.idCache, "id-cache", true, "in-process service: identity cache (Config.IdentityMaxStale)")
	flag.DurationVar(&o.maxStale, "max-stale", 2*time.Second, "in-process service: identity cache staleness bound")
	flag.BoolVar(&o.unverified, "unverified-replies", false, "measured clients do not verify the service's reply signatures (client.WithUnverifiedReplies); by default they do, as the client does")
	flag.BoolVar(&o.keyCache, "key-cache", true, "in-process service: sealed-key object cache (Config.KeyCacheBytes)")
	flag.BoolVar(&o.roomIndex, "room-index", true, "in-process service: room index for member pages and my rooms (Config.RoomIndexWait)")
	flag.StringVar(&o.prefix, "prefix", "", "service subject prefix (default the service's)")
	flag.StringVar(&o.ops, "ops", defaultOps, "operations to run, in this order")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phase (service, server and clients alike) to this file")
	flag.IntVar(&o.roomsPerClient, "rooms-per-client", 0, "scale layout: each client owns exactly this many rooms and belongs to no other; the other rooms are owned and filled by the non-client identities (0: rooms owned round-robin by the clients; with --state: 20 or the state's)")
	flag.StringVar(&o.state, "state", "", "scale layout: file keeping the seeded deployment (identity seeds, rooms) so that a later run against the same data measures it again, or seeds it further, instead of seeding anew (use with --nats-url; keep it private)")
	flag.BoolVar(&o.seedOnly, "seed-only", false, "stop after seeding (with --state: to measure in later runs)")
	flag.IntVar(&o.seedWorkers, "seed-workers", 32, "scale layout: concurrent room creations while seeding")
	flag.IntVar(&o.bigRoom, "big-room", 0, "scale layout: also seed one room with this many members and compare its member-list pages with --small-room's")
	flag.IntVar(&o.smallRoom, "small-room", 500, "scale layout, with --big-room: members of the room whose pages are the reference")
	flag.IntVar(&o.pid, "pid", 0, "also report this process's resident size (e.g. an external membershipd) before and after the measured load")
	flag.BoolVar(&o.pages, "pages", true, "scale layout with --big-room: time member-list pages of the large and the small room")
	flag.BoolVar(&o.probe, "probe-ready", false, "only wait until the service at --nats-url answers a signed whoami (admin of --state or --admin-identity), print READY with the time, and exit; start it with membershipd to time startup")
	flag.StringVar(&o.adminFile, "admin-identity", "", "with --probe-ready: admin identity file (e.g. <data-dir>/admin.identity)")
	flag.BoolVar(&o.bus, "bus", false, "also measure the bus enforcing membership at the issue's scale (10k identities, 1,000 connected endpoints, 100 rooms); --quick always measures it at a tenth")
	flag.IntVar(&o.busEndpoints, "bus-endpoints", 0, "bus run: endpoints connected (and connecting at once); 0: 1,000, or 100 with --quick")
	flag.IntVar(&o.busRounds, "bus-rounds", 0, "bus run: measurement rounds after one seeding (connect, storm, removals; the BUS line gives their medians); 0: 3, or 1 with --quick")
	flag.BoolVar(&o.busCluster, "bus-cluster", false, "measure only the bus's revocation on a 3-node cluster started in-process from --bus-cluster-conf (1,000 connected endpoints, 100 removals; a tenth with --quick) and print BUSCLUSTER revoke_p99_ms=N cut_p99_ms=N")
	flag.StringVar(&o.busClusterConf, "bus-cluster-conf", "docs/deploy/callout", "with --bus-cluster: directory of the documented cluster's config files (n1.conf, n2.conf, n3.conf)")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		for name, v := range map[string]any{"duration": 2 * time.Second, "mutations": 300, "identities": 64, "rooms": 64} {
			if !set[name] {
				switch v := v.(type) {
				case time.Duration:
					o.duration = v
				case int:
					switch name {
					case "mutations":
						o.mutations = v
					case "identities":
						o.identities = v
					case "rooms":
						o.rooms = v
					}
				}
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var progress io.Writer // only on a terminal
	if term.IsTerminal(int(os.Stdout.Fd())) {
		progress = os.Stdout
	}
	if o.probe {
		if err := probeReady(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "memberbench:", err)
			os.Exit(1)
		}
		return
	}
	run := func() error { return bench(ctx, o, os.Stdout, progress) }
	if o.busCluster {
		run = func() error { return busClusterBench(ctx, o, os.Stdout) }
	}
	if err := run(); err != nil {
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "memberbench:", err)
		os.Exit(1)
	}
}
