package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/unibus/membership/internal/natsconn"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// Config is the daemon's configuration: flags over environment over
// defaults.
type Config struct {
	// Conn connects to an existing deployment, with the nats CLI's flags.
	Conn natsconn.Options
	// ConnectWait bounds how long start-up keeps retrying to reach NATS.
	ConnectWait time.Duration

	// Orphan sweep of sealed-key objects (service.Sweep); 0 disables it.
	SweepInterval time.Duration
	SweepGrace    time.Duration

	DataDir string
	Listen  string
	Sync    string

	ServerName    string
	ClusterName   string
	ClusterListen string
	Routes        string

	Bucket     string
	KeysBucket string
	Replicas   int

	BootstrapAdmin string
	AdminEndpoint  string

	LogLevel  string
	LogFormat string

	// ServiceKey is the nkeys server seed file that signs replies and audit
	// entries (embedded default: <data-dir>/service.nk, generated).
	ServiceKey string
	// PreviousServiceKey is, during a key rotation, the seed file of the
	// key ServiceKey replaces (docs/protocol.md §16).
	PreviousServiceKey string

	Service service.Config
	Bus     busConfig // bus enforcement (bus.go)

	PrintConfig  bool          // print the effective settings and exit
	PrintVersion bool          // print the build's version and exit
	flags        *flag.FlagSet // for --print-config
}

// Embedded reports whether to start an in-process nats-server.
// Unlike memberctl, the daemon never falls back to the context selected with
// `nats context select`: a developer's selected context must not turn the
// embedded default into a replica of some other deployment.
func (c *Config) Embedded() bool { return c.Conn.Server == "" && c.Conn.Context == "" }

// Validate rejects settings that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("--replicas %d: want 1, 3 or 5", c.Replicas))
	}
	if c.Embedded() && c.Routes == "" && c.Replicas != 1 {
		errs = append(errs, errors.New("--replicas above 1 needs a NATS cluster (--server, --context or --routes)"))
	}
	if (c.Routes != "") != (c.ClusterListen != "") {
		errs = append(errs, errors.New("--routes and --cluster-listen go together"))
	}
	if c.Routes != "" && !c.Embedded() {
		errs = append(errs, errors.New("--routes runs an embedded cluster node; drop --server/--context"))
	}
	if c.Routes != "" && c.ServerName == "" {
		errs = append(errs, errors.New("--server-name is required for a cluster node"))
	}
	if c.Sync != "always" {
		if _, err := time.ParseDuration(c.Sync); err != nil {
			errs = append(errs, fmt.Errorf("--sync %q: want always or a duration such as 1s", c.Sync))
		}
	}
	// Replicas must sign with one key, or clients pinning it refuse some
	// of them; only a lone embedded server may generate its own.
	if c.ServiceKey == "" && (!c.Embedded() || c.Routes != "") {
		errs = append(errs, errors.New("--service-key is required when joining a deployment or a cluster: give every replica the same server seed file (nats auth nkey gen server --output FILE)"))
	}
	if c.ConnectWait <= 0 {
		errs = append(errs, fmt.Errorf("--connect-wait %s: want a positive duration", c.ConnectWait))
	}
	errs = append(errs, c.Conn.Validate())
	if c.SweepInterval < 0 {
		errs = append(errs, fmt.Errorf("--sweep-interval %s: want 0 (off) or a positive duration", c.SweepInterval))
	}
	// A mutation writes its sealed keys before its batch commits, within
	// the request timeout: a shorter grace could sweep a key in use.
	if timeout := max(c.Service.RequestTimeout, service.DefaultRequestTimeout); c.SweepGrace <= 2*timeout {
		errs = append(errs, fmt.Errorf("--sweep-grace %s: want more than twice the request timeout (%s)", c.SweepGrace, timeout))
	}
	errs = append(errs, c.Service.Validate(), c.Bus.validate(c.Embedded(), c.Conn.Server, c.Routes))
	return errors.Join(errs...)
}

// parseFlags reads flags and their environment variables.
func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("membershipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var auth string
	str := func(p *string, name, env, def, usage string) {
		if v := os.Getenv(env); v != "" { // an empty variable counts as unset
			def = v
		}
		fs.StringVar(p, name, def, usage+" (env "+env+")")
	}
	for _, f := range c.Conn.Flags() {
		usage := f.Usage
		switch f.Name {
		case "server":
			usage = "NATS server URLs of an existing deployment, comma-separated; without --server or --context an embedded server starts"
		case "context":
			usage = "nats CLI context of an existing deployment (the selected context is not used: without --server or --context an embedded server starts)"
		}
		str(f.Value, f.Name, f.Env, "", usage)
		if f.Short != "" {
			fs.Var(alias{fs.Lookup(f.Name)}, f.Short, "short for --"+f.Name)
		}
	}
	// --nats-url was the flag's name before it matched the nats CLI's.
	fs.Var(alias{fs.Lookup("server")}, "nats-url", "old name of --server")
	str(&c.DataDir, "data-dir", "MEMBERSHIPD_DATA_DIR", "membership-data", "embedded server: JetStream data directory")
	str(&c.Listen, "listen", "MEMBERSHIPD_LISTEN", "127.0.0.1:4222", "embedded server: client listen address (loopback by default)")
	str(&c.Sync, "sync", "MEMBERSHIPD_SYNC", "always", "embedded server: JetStream fsync policy, always or an interval such as 1s")
	str(&c.ServerName, "server-name", "MEMBERSHIPD_SERVER_NAME", "", "embedded server: unique server name (required with --routes)")
	str(&c.ClusterName, "cluster-name", "MEMBERSHIPD_CLUSTER_NAME", "membership", "embedded cluster node: cluster name")
	str(&c.ClusterListen, "cluster-listen", "MEMBERSHIPD_CLUSTER_LISTEN", "", "embedded cluster node: route listen address, e.g. 127.0.0.1:6222")
	str(&c.Routes, "routes", "MEMBERSHIPD_ROUTES", "", "embedded cluster node: comma-separated route URLs of the other nodes, e.g. nats://127.0.0.1:6223,nats://127.0.0.1:6224")
	str(&c.Bucket, "bucket", "MEMBERSHIPD_BUCKET", subjects.DefaultBucket, "KV bucket for state and nonces")
	str(&c.KeysBucket, "keys-bucket", "MEMBERSHIPD_KEYS_BUCKET", subjects.DefaultKeysBucket, "object store bucket for sealed room keys")
	str(&c.BootstrapAdmin, "bootstrap-admin", "MEMBERSHIPD_BOOTSTRAP_ADMIN", "", "identity file of the first admin: registered if new, generated if missing (embedded default: <data-dir>/admin.identity)")
	str(&c.AdminEndpoint, "admin-endpoint", "MEMBERSHIPD_ADMIN_ENDPOINT", "admin", "endpoint id for a generated admin identity")
	str(&c.Service.Prefix, "prefix", "MEMBERSHIPD_PREFIX", subjects.DefaultPrefix, "subject prefix of the operations")
	str(&c.Service.QueueGroup, "queue", "MEMBERSHIPD_QUEUE", subjects.DefaultQueue, "queue group shared by all replicas")
	str(&auth, "auth", "MEMBERSHIPD_AUTH", string(service.AuthEnforce), "request authentication: enforce, soft or off. soft and off are moot today: every v1 operation needs a signer, so they refuse unsigned requests as enforce does (soft only logs the reason first); the rollout switch for the bus is --bus")
	str(&c.LogLevel, "log-level", "MEMBERSHIPD_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "MEMBERSHIPD_LOG_FORMAT", "text", "text or json")
	str(&c.PreviousServiceKey, "previous-service-key", "MEMBERSHIPD_PREVIOUS_SERVICE_KEY", "", "during a key rotation: the seed file of the key --service-key replaces; it signs the statement that moves pinned clients to the new key (docs/protocol.md §16)")
	str(&c.ServiceKey, "service-key", "MEMBERSHIPD_SERVICE_KEY", "", "nkeys server seed file (SN…) signing replies and audit entries; clients pin its public key. Embedded default: <data-dir>/service.nk, generated if missing; every replica of a deployment needs the same file")
	c.Bus.flags(fs, str)
	var envErrs []error
	fs.Float64Var(&c.Service.RateLimit, "rate-limit", envFloat("MEMBERSHIPD_RATE_LIMIT", service.DefaultRateLimit, &envErrs), "requests per second each identity may sustain; 0 disables the limit (env MEMBERSHIPD_RATE_LIMIT)")
	fs.IntVar(&c.Service.RateBurst, "rate-burst", envInt("MEMBERSHIPD_RATE_BURST", service.DefaultRateBurst, &envErrs), "requests an identity may send at once above its rate (env MEMBERSHIPD_RATE_BURST)")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", envDuration("MEMBERSHIPD_SWEEP_INTERVAL", service.DefaultSweepInterval, &envErrs), "how often to remove orphaned sealed-key objects; 0 disables the sweep (env MEMBERSHIPD_SWEEP_INTERVAL)")
	fs.DurationVar(&c.SweepGrace, "sweep-grace", envDuration("MEMBERSHIPD_SWEEP_GRACE", service.DefaultSweepGrace, &envErrs), "age below which an unreferenced sealed-key object is kept: it may belong to a mutation in flight (env MEMBERSHIPD_SWEEP_GRACE)")
	fs.DurationVar(&c.ConnectWait, "connect-wait", envDuration("MEMBERSHIPD_CONNECT_WAIT", defaultConnectWait, &envErrs), "how long start-up retries to reach NATS before giving up, so that replicas may start before the servers (env MEMBERSHIPD_CONNECT_WAIT)")
	fs.IntVar(&c.Replicas, "replicas", envInt("MEMBERSHIPD_REPLICAS", 1, &envErrs), "bucket replicas: 1 embedded, 3 recommended on a cluster (env MEMBERSHIPD_REPLICAS)")
	fs.DurationVar(&c.Service.Skew, "skew", envDuration("MEMBERSHIPD_SKEW", service.DefaultSkew, &envErrs), "accepted clock skew of a request's ts; nonces live twice as long (env MEMBERSHIPD_SKEW)")
	fs.IntVar(&c.Service.MaxRequest, "max-request", envInt("MEMBERSHIPD_MAX_REQUEST", service.DefaultMaxRequest, &envErrs), "largest accepted request in bytes (env MEMBERSHIPD_MAX_REQUEST)")
	fs.IntVar(&c.Service.Workers, "workers", envInt("MEMBERSHIPD_WORKERS", max(4, 2*runtime.GOMAXPROCS(0)), &envErrs), "micro service instances in this process, each serving one request per endpoint at a time; `nats micro ls` lists each (env MEMBERSHIPD_WORKERS)")
	fs.DurationVar(&c.Service.IdentityMaxStale, "identity-max-stale", envDuration("MEMBERSHIPD_IDENTITY_MAX_STALE", service.DefaultIdentityMaxStale, &envErrs), "identity cache: a disable or key change takes effect within this; negative disables the cache (env MEMBERSHIPD_IDENTITY_MAX_STALE)")
	fs.DurationVar(&c.Service.RoomIndexWait, "room-index-wait", envDuration("MEMBERSHIPD_ROOM_INDEX_WAIT", service.DefaultRoomIndexWait, &envErrs), "room index: how long a page waits for the index to catch up before it is read from the store; negative disables the index (env MEMBERSHIPD_ROOM_INDEX_WAIT)")
	fs.IntVar(&c.Service.KeyCacheBytes, "key-cache-bytes", envInt("MEMBERSHIPD_KEY_CACHE_BYTES", service.DefaultKeyCacheBytes, &envErrs), "bytes of immutable sealed-key objects cached in memory; negative disables the cache (env MEMBERSHIPD_KEY_CACHE_BYTES)")
	fs.String("config", "", "JSON file of settings by flag name, e.g. {\"replicas\": 3}; flags and environment win over it (env MEMBERSHIPD_CONFIG)")
	fs.BoolVar(&c.PrintVersion, "version", false, "print the build's version and exit")
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print the effective settings (flags > env > config file > defaults) as JSON and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: membershipd [flags]\n\n"+
			"Serves the unibus membership service as NATS micro endpoints (inspect with `nats micro ls`).\n"+
			"Without --server or --context it runs an embedded nats-server with JetStream on --listen,\n"+
			"storing data in --data-dir, and writes the first admin identity to <data-dir>/admin.identity.\n"+
			"With --routes and --cluster-listen the embedded server is one node of a JetStream cluster\n"+
			"(give every node the same --bootstrap-admin file).\n"+
			"SIGINT or SIGTERM drains in-flight requests and stops.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if path := configFileArg(args); path != "" {
		if err := applyConfigFile(fs, path); err != nil {
			return nil, err
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.flags = fs
	if c.PrintVersion {
		return c, nil
	}
	if err := errors.Join(envErrs...); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	mode, err := service.ParseAuthMode(auth)
	if err != nil {
		return nil, err
	}
	c.Service.Auth = mode
	if c.Service.RateLimit == 0 {
		c.Service.RateLimit = -1 // the flag's 0 means off; the library's 0 means its default
	}
	if c.Service.RateLimit < 0 && c.Service.RateLimit != -1 {
		return nil, fmt.Errorf("--rate-limit %v: want 0 (off) or a positive rate", c.Service.RateLimit)
	}
	if c.Embedded() && c.Routes == "" && c.BootstrapAdmin == "" {
		c.BootstrapAdmin = filepath.Join(c.DataDir, "admin.identity")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// envInt reads an integer default from the environment, recording a value
// that does not parse.
func envInt(name string, def int, errs *[]error) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: not an integer", name, v))
		return def
	}
	return n
}

// envFloat reads a number default from the environment, recording a value
// that does not parse.
func envFloat(name string, def float64, errs *[]error) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: not a number", name, v))
		return def
	}
	return f
}

// envDuration reads a duration default from the environment, recording a
// value that does not parse.
func envDuration(name string, def time.Duration, errs *[]error) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: not a duration such as 30s", name, v))
		return def
	}
	return d
}

// alias is a second name of a flag: setting it sets the flag.
type alias struct{ f *flag.Flag }

func (a alias) String() string {
	if a.f == nil {
		return ""
	}
	return a.f.Value.String()
}
func (a alias) Set(v string) error { return a.f.Value.Set(v) }

// isAlias reports whether a flag is another name of one printed already.
func isAlias(f *flag.Flag) bool { _, ok := f.Value.(alias); return ok }
