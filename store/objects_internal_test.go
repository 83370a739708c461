package store

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/internal/natstest"
)

// BenchmarkPutObject compares, on one server with fsync on every write
// (membershipd's default), a new sealed-key object written by PutObject
// (createObject: one round trip) with the checked path it replaced for
// new names (an existence check, then nats.go's Put). Run with
//
//	go test -run - -bench PutObject -count 3 ./store
func BenchmarkPutObject(b *testing.B) {
	nc := natstest.Connect(b, natstest.ServerWith(b, &server.Options{SyncAlways: true}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Open(ctx, natstest.JetStream(b, nc), Config{Bucket: "bench", KeysBucket: "bench-keys", MaxTTL: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	sealed := make([]byte, 120)
	checked := func(ctx context.Context, name string, data []byte) error {
		if _, err := st.obj.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
			return err
		}
		_, err := st.obj.PutBytes(ctx, name, data)
		return err
	}
	for _, bb := range []struct {
		name string
		put  func(context.Context, string, []byte) error
	}{{"create", st.PutObject}, {"checked", checked}} {
		b.Run(bb.name, func(b *testing.B) {
			b.SetParallelism(4) // GOMAXPROCS×4 writers, as handlers
			var n atomic.Int64
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					name := bb.name + "/" + run + "/" + strconv.FormatInt(n.Add(1), 10)
					if err := bb.put(ctx, name, sealed); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
