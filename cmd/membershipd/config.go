package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"time"

	"github.com/choria-io/fisk"

	"github.com/unibus/membership/internal/cli"
	"github.com/unibus/membership/internal/natsconn"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
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
	Shards     int // room shards: 0 as the deployment was created, or DefaultShards for a new one

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

	PrintConfig bool              // print the effective settings and exit
	app         *fisk.Application // for --print-config
}

// DefaultShards is the number of room shards a new deployment is created
// with when --shards is 0. One, by measurement (docs/performance.md,
// "Shards"): at the default --workers an embedded node commits add-members
// 1.27x faster on four shards (medians of three on the shared machine,
// where the raw batches themselves gain only 1.4-1.6x from four streams),
// and one shard is the original layout, with no extra streams to permit,
// back up and watch.
const DefaultShards = 1

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
	if c.Shards < 0 || c.Shards > store.MaxShards {
		errs = append(errs, fmt.Errorf("--shards %d: want 0 (as created) or 1 to %d", c.Shards, store.MaxShards))
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

// usage is membershipd's help text above its flags.
const usage = `Serves the unibus membership service as NATS micro endpoints (inspect with 'nats micro ls').

Without --server or --context it runs an embedded nats-server with JetStream on --listen, storing
data in --data-dir, and writes the first admin identity to <data-dir>/admin.identity. With --routes
and --cluster-listen the embedded server is one node of a JetStream cluster (give every node the
same --bootstrap-admin file). SIGINT or SIGTERM drains in-flight requests and stops.

Every flag can be set through the environment variable shown with it (an empty one counts as
unset), or in the --config file; flags win over the environment, which wins over the file.`

// newApp defines membershipd's flags on a fisk application, bound to c.
func newApp(c *Config, auth *string, stdout, stderr io.Writer) *fisk.Application {
	app := cli.New("membershipd", usage, stdout, stderr)
	c.Conn.Register(app)
	app.GetFlag("server").Help("NATS server URLs of an existing deployment, comma-separated; without --server or --context an embedded server starts")
	app.GetFlag("context").Help("nats CLI context of an existing deployment (the selected context is not used: without --server or --context an embedded server starts)")
	// --nats-url was the flag's name before it matched the nats CLI's.
	app.Flag("nats-url", "old name of --server").Hidden().PlaceHolder("URL").StringVar(&c.Conn.Server)
	// Flags without a default show what their value is.
	placeholders := map[string]string{"server-name": "NAME", "cluster-listen": "ADDR", "routes": "URLS",
		"bootstrap-admin": "FILE", "previous-service-key": "FILE", "service-key": "FILE"}
	str := func(p *string, name, env, def, help string) {
		f := app.Flag(name, help).Envar(env).PlaceHolder(placeholders[name])
		if def != "" {
			f.Default(def)
		}
		f.StringVar(p)
	}
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
	str(auth, "auth", "MEMBERSHIPD_AUTH", string(service.AuthEnforce), "request authentication: enforce, soft or off. soft and off are moot today: every v1 operation needs a signer, so they refuse unsigned requests as enforce does (soft only logs the reason first); the rollout switch for the bus is --bus")
	str(&c.LogLevel, "log-level", "MEMBERSHIPD_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "MEMBERSHIPD_LOG_FORMAT", "text", "text or json")
	str(&c.PreviousServiceKey, "previous-service-key", "MEMBERSHIPD_PREVIOUS_SERVICE_KEY", "", "during a key rotation: the seed file of the key --service-key replaces; it signs the statement that moves pinned clients to the new key (docs/protocol.md §16)")
	str(&c.ServiceKey, "service-key", "MEMBERSHIPD_SERVICE_KEY", "", "nkeys server seed file (SN…) signing replies and audit entries; clients pin its public key. Embedded default: <data-dir>/service.nk, generated if missing; every replica of a deployment needs the same file")
	c.Bus.flags(str)
	num := func(name, env string, def any, help string) *fisk.FlagClause {
		return app.Flag(name, help).Envar(env).Default(fmt.Sprint(def))
	}
	num("rate-limit", "MEMBERSHIPD_RATE_LIMIT", service.DefaultRateLimit, "requests per second each identity may sustain; 0 disables the limit").Float64Var(&c.Service.RateLimit)
	num("rate-burst", "MEMBERSHIPD_RATE_BURST", service.DefaultRateBurst, "requests an identity may send at once above its rate").IntVar(&c.Service.RateBurst)
	num("sweep-interval", "MEMBERSHIPD_SWEEP_INTERVAL", service.DefaultSweepInterval, "how often to remove orphaned sealed-key objects; 0 disables the sweep").DurationVar(&c.SweepInterval)
	num("sweep-grace", "MEMBERSHIPD_SWEEP_GRACE", service.DefaultSweepGrace, "age below which an unreferenced sealed-key object is kept: it may belong to a mutation in flight").DurationVar(&c.SweepGrace)
	num("connect-wait", "MEMBERSHIPD_CONNECT_WAIT", defaultConnectWait, "how long start-up retries to reach NATS before giving up, so that replicas may start before the servers").DurationVar(&c.ConnectWait)
	num("replicas", "MEMBERSHIPD_REPLICAS", 1, "bucket replicas: 1 embedded, 3 recommended on a cluster").IntVar(&c.Replicas)
	num("shards", "MEMBERSHIPD_SHARDS", 0, fmt.Sprintf("room shards (streams) of the state, fixed when the deployment is created: 0 opens an existing deployment as it was created and creates a new one with %d; another count than the deployment's is refused (docs/deploy.md, \"Shards\")", DefaultShards)).IntVar(&c.Shards)
	num("skew", "MEMBERSHIPD_SKEW", service.DefaultSkew, "accepted clock skew of a request's ts; nonces live twice as long").DurationVar(&c.Service.Skew)
	num("max-request", "MEMBERSHIPD_MAX_REQUEST", service.DefaultMaxRequest, "largest accepted request in bytes").IntVar(&c.Service.MaxRequest)
	num("workers", "MEMBERSHIPD_WORKERS", max(4, 2*runtime.GOMAXPROCS(0)), "micro service instances in this process, each serving one request per endpoint at a time; 'nats micro ls' lists each").IntVar(&c.Service.Workers)
	num("identity-max-stale", "MEMBERSHIPD_IDENTITY_MAX_STALE", service.DefaultIdentityMaxStale, "identity cache: a disable or key change takes effect within this; negative disables the cache").DurationVar(&c.Service.IdentityMaxStale)
	num("room-index-wait", "MEMBERSHIPD_ROOM_INDEX_WAIT", service.DefaultRoomIndexWait, "room index: how long a page waits for the index to catch up before it is read from the store; negative disables the index").DurationVar(&c.Service.RoomIndexWait)
	num("key-cache-bytes", "MEMBERSHIPD_KEY_CACHE_BYTES", service.DefaultKeyCacheBytes, "bytes of immutable sealed-key objects cached in memory; negative disables the cache").IntVar(&c.Service.KeyCacheBytes)
	app.Flag("config", "JSON file of settings by flag name, e.g. {\"replicas\": 3}; flags and environment win over it").Envar("MEMBERSHIPD_CONFIG").PlaceHolder("FILE").String()
	app.Flag("print-config", "print the effective settings (flags > env > config file > defaults) as JSON and exit").UnNegatableBoolVar(&c.PrintConfig)
	return app
}

// parseFlags reads flags, their environment variables and the config file.
// done is true when the command line was answered already (--help,
// --version, a completion script).
func parseFlags(args []string, stdout, stderr io.Writer) (c *Config, done bool, err error) {
	c = &Config{}
	var auth string
	app := newApp(c, &auth, stdout, stderr)
	c.app = app
	if err := cli.CheckEnv(app); err != nil {
		return nil, false, err
	}
	if path := configFileArg(args); path != "" {
		if err := applyConfigFile(app, path); err != nil {
			return nil, false, err
		}
	}
	if _, done, _, err := cli.Parse(app, args); done || err != nil {
		return nil, done, err
	}
	mode, err := service.ParseAuthMode(auth)
	if err != nil {
		return nil, false, err
	}
	c.Service.Auth = mode
	if c.Service.RateLimit == 0 {
		c.Service.RateLimit = -1 // the flag's 0 means off; the library's 0 means its default
	}
	if c.Service.RateLimit < 0 && c.Service.RateLimit != -1 {
		return nil, false, fmt.Errorf("--rate-limit %v: want 0 (off) or a positive rate", c.Service.RateLimit)
	}
	if c.Embedded() && c.Routes == "" && c.BootstrapAdmin == "" {
		c.BootstrapAdmin = filepath.Join(c.DataDir, "admin.identity")
	}
	if err := c.Validate(); err != nil {
		return nil, false, err
	}
	return c, false, nil
}
