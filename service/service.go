package service

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// Service is one replica of the membership service.
type Service struct {
	cfg   Config
	store *store.Store
	micro micro.Service
	stats *stats

	key      nkeys.KeyPair      // the service key (respsign.go)
	signer   envelope.KeySigner // key's signer: replies and audit entries
	pub      string             // key's public key, N…
	rotation map[string]string  // rotation statement for the metadata, if rotating (respsign.go)
	replays  *replayCache       // nil when disabled (replaycache.go)
	limiter  *rateLimiter       // nil when disabled (ratelimit.go)

	instances []micro.Service // one per worker (workers.go)
	ids       *identityCache  // nil when disabled (cache.go)
	index     *roomIndex      // nil when disabled (roomindex.go)
	keys      *objectCache    // nil when disabled (cache.go)
	stopCache context.CancelFunc
	nc        *nats.Conn   // flushed before a caller's own connections are kicked (bus.go)
	conn      *connEpoch   // ends requests in flight when nc drops (connloss.go)
	active    atomic.Int64 // handlers running (Stop waits for them)
	started   atomic.Int64 // handlers ever started
	seqs      seqRounds    // the shards' last-sequence reads of the callout and room.mine, coalesced (bus.go)
}

// operation is one row of the protocol's operation table ([api.Ops]) with
// its handler: mutate for a row that mutates, read otherwise.
type operation struct {
	api.OpSpec
	read   readFunc
	mutate mutateFunc
}

// operations binds every row of [api.Ops] to its handler (bindOps).
func (s *Service) operations() ([]operation, error) {
	reads := map[subjects.Op]readFunc{
		subjects.OpIdentityGet: s.getIdentity, subjects.OpIdentityList: s.listIdentities, subjects.OpWhoami: s.whoami,
		subjects.OpRoomGet: s.getRoom, subjects.OpRoomMembers: s.roomMembers, subjects.OpRoomKey: s.roomKey,
		subjects.OpRoomMine: s.myRooms, subjects.OpRoomAudit: s.roomAudit, subjects.OpIdentityAudit: s.identityAudit,
	}
	mutations := map[subjects.Op]mutateFunc{
		subjects.OpIdentityRegister: s.register, subjects.OpIdentityDisable: s.disable, subjects.OpIdentityEnable: s.enable,
		subjects.OpRoomCreate: s.createRoom, subjects.OpRoomAdd: s.addMember, subjects.OpRoomRemove: s.removeMember,
		subjects.OpRoomLeave: s.leaveRoom, subjects.OpRoomRekey: s.rekey, subjects.OpRoomDelete: s.deleteRoom,
	}
	return bindOps(api.Ops, reads, mutations)
}

// bindOps pairs each row of specs with its handler. The table, not the kind
// of handler, says whether an op mutates: a row whose handler is missing or
// of the other kind, or a handler without a row, is an error.
func bindOps(specs []api.OpSpec, reads map[subjects.Op]readFunc, mutations map[subjects.Op]mutateFunc) ([]operation, error) {
	ops := make([]operation, 0, len(specs))
	for _, spec := range specs {
		o := operation{OpSpec: spec, read: reads[spec.Op]}
		if spec.Mutates {
			o = operation{OpSpec: spec, mutate: mutations[spec.Op]}
		}
		if o.read == nil && o.mutate == nil {
			return nil, fmt.Errorf("operation %s (mutates: %t) has no handler of its kind", spec.Op, spec.Mutates)
		}
		ops = append(ops, o)
	}
	if n := len(reads) + len(mutations); n != len(ops) {
		return nil, fmt.Errorf("%d handlers for %d operations", n, len(ops))
	}
	return ops, nil
}

// Start registers the service and its endpoints on nc. The store must be
// open. Stop it with [Service.Stop].
func Start(nc *nats.Conn, st *store.Store, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st.MaxTTL() < cfg.NonceTTL() {
		// Claims that expire before their requests stop being accepted
		// would let a captured request be replayed.
		return nil, fmt.Errorf("store keeps nonces for %s, shorter than the %s that a skew of %s needs: open it with MaxTTL service.NonceTTL(skew)",
			st.MaxTTL(), cfg.NonceTTL(), cfg.Skew)
	}
	s := &Service{cfg: cfg, store: st, nc: nc}
	if err := s.initDefences(); err != nil {
		return nil, err
	}
	s.stats = newStats(func(ctx context.Context) (int, error) {
		keys, err := st.KeysAll(ctx, famOwed)
		return len(keys), err
	})
	meta := map[string]string{
		"protocol":         subjects.ProtocolVersion,
		"prefix":           cfg.Prefix,
		"auth_mode":        string(cfg.Auth),
		"skew":             cfg.Skew.String(),
		"max_request":      strconv.Itoa(cfg.MaxRequest),
		api.MetaServiceKey: s.pub,
	}
	for k, v := range s.rotation {
		meta[k] = v
	}
	for k, v := range processIdentity() {
		meta[k] = v
	}
	for k, v := range cfg.Metadata {
		meta[k] = v
	}
	s.startCaches()
	s.nc, s.conn = nc, watchConn(nc)
	if err := s.addInstances(nc, meta); err != nil {
		s.conn.stop(nc)
		s.stopCaches()
		return nil, err
	}
	return s, nil
}

// Stop unsubscribes every endpoint of every worker instance after draining
// it, then stops the caches.
func (s *Service) Stop() error {
	err := s.stopInstances()
	s.waitIdle()
	s.conn.stop(s.nc)
	s.stopCaches()
	return err
}

// waitIdle waits until the requests taken before Stop are answered: micro
// only drains its subscriptions asynchronously, and a caller that drains or
// closes the connection right after Stop would fail their JetStream writes
// ("connection draining") and answer them 503 instead of finishing them.
// After a flush the server delivers nothing more, so what remains is in the
// subscriptions' queues, handled back to back: idle is no handler running
// and none started over a short pause. Bounded by the request timeout.
func (s *Service) waitIdle() {
	_ = s.nc.Flush()
	deadline := time.Now().Add(s.cfg.RequestTimeout + time.Second)
	for time.Now().Before(deadline) {
		seen := s.started.Load()
		if s.active.Load() == 0 {
			time.Sleep(idlePause)
			if s.active.Load() == 0 && s.started.Load() == seen {
				return
			}
		}
		time.Sleep(idlePause / 5)
	}
}

// idlePause is how long no handler may start for Stop to call the
// replica idle.
const idlePause = 50 * time.Millisecond

// Micro exposes the micro service (info, stats).
func (s *Service) Micro() micro.Service { return s.micro }

// get reads key and decodes its msgpack value into v; found is false if
// the key holds no value.
func (s *Service) get(ctx context.Context, c *call, key string, v any) (rev uint64, found bool, err error) {
	ent, err := s.read(ctx, c, key) // prefetch.go
	if err != nil {
		return 0, false, s.storeErr(c, "get "+keyFamily(key), err)
	}
	if !ent.Exists() {
		return ent.Rev, false, nil
	}
	if err := msgpack.Unmarshal(ent.Value, v); err != nil {
		return 0, false, s.internal(c, "decode "+keyFamily(key), err)
	}
	return ent.Rev, true, nil
}

// keyFamily is the first token of a key, safe to log.
func keyFamily(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			return key[:i]
		}
	}
	return key
}

// identityBySigner finds the identity whose signing key is pub, or nil.
func (s *Service) identityBySigner(ctx context.Context, c *call, pub string) (*api.Identity, error) {
	if id, ok := s.ids.lookup(pub, time.Now()); ok {
		return id, nil // fresh within Config.IdentityMaxStale (cache.go)
	}
	var endpoint string
	if _, ok, err := s.get(ctx, c, keySigner(pub), &endpoint); err != nil || !ok {
		return nil, err
	}
	id, _, err := s.identity(ctx, c, endpoint)
	if err != nil || id == nil || id.SignKey != pub {
		return nil, err
	}
	return id, nil
}

// publicKeys returns endpoint's identity for its public keys, from the
// identity cache while it is fresh; nil if not registered.
func (s *Service) publicKeys(ctx context.Context, c *call, endpoint string) (*api.Identity, error) {
	if id, ok := s.ids.byEndpointLookup(endpoint, time.Now()); ok {
		return id, nil
	}
	id, _, err := s.identity(ctx, c, endpoint)
	return id, err
}

// identity reads an identity and its revision; nil if not registered.
func (s *Service) identity(ctx context.Context, c *call, endpoint string) (*api.Identity, uint64, error) {
	var id api.Identity
	rev, ok, err := s.get(ctx, c, keyIdentity(endpoint), &id)
	if err != nil || !ok {
		return nil, rev, err
	}
	return &id, rev, nil
}

// put is a write of v at key, expecting rev.
func put(key string, rev uint64, v any) store.Write {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err) // only our own record types reach here
	}
	return store.Write{Key: key, Value: b, Rev: rev}
}

func del(key string, rev uint64) store.Write { return store.Write{Key: key, Rev: rev, Delete: true} }
