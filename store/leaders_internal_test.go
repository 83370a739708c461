package store

import (
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestLeastLoaded: walking shards in order, the choice keeps a leader
// while it leads no more than its least loaded peer and otherwise hands
// the shard to that peer (first by name), never to an offline one.
func TestLeastLoaded(t *testing.T) {
	peers := func(names ...string) []*jetstream.PeerInfo {
		var out []*jetstream.PeerInfo
		for _, n := range names {
			out = append(out, &jetstream.PeerInfo{Name: n, Current: true})
		}
		return out
	}
	walk := func(leaders []string, followers func(leader string) []*jetstream.PeerInfo) []string {
		led := map[string]int{}
		var got []string
		for _, l := range leaders {
			to := leastLoaded(led, l, followers(l))
			led[to]++
			got = append(got, to)
		}
		return got
	}
	others := func(l string) []*jetstream.PeerInfo {
		return peers(slices.DeleteFunc([]string{"n3", "n1", "n2"}, func(n string) bool { return n == l })...)
	}
	for _, tc := range []struct {
		leaders, want []string
	}{
		{[]string{"n3", "n3", "n3", "n3"}, []string{"n3", "n1", "n2", "n3"}},
		{[]string{"n2", "n1", "n3", "n2"}, []string{"n2", "n1", "n3", "n2"}}, // balanced: untouched
		{[]string{"n1", "n1", "n2", "n2"}, []string{"n1", "n2", "n3", "n2"}},
	} {
		if got := walk(tc.leaders, others); !slices.Equal(got, tc.want) {
			t.Errorf("leaders %v: spread to %v, want %v", tc.leaders, got, tc.want)
		}
	}
	offline := func(l string) []*jetstream.PeerInfo {
		f := others(l)
		for _, p := range f {
			p.Offline = p.Name == "n1"
		}
		return f
	}
	if got, want := walk([]string{"n3", "n3", "n3"}, offline), []string{"n3", "n2", "n3"}; !slices.Equal(got, want) {
		t.Errorf("with n1 offline: %v, want %v", got, want)
	}
}
