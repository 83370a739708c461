package client

import (
	"testing"
	"time"
)

// TestChannelReplayWindow: new ids are claimed, a seen one refuses its
// whole frame without recording the frame's others, an id twice in one
// frame refuses it, and ids are forgotten once keep has passed.
func TestChannelReplayWindow(t *testing.T) {
	ch := &Channel{window: time.Minute}
	w := ch.newReplayWindow()
	id := func(b byte) MessageID { return MessageID{b} }
	t0 := time.Now()
	if !w.claim([]MessageID{id(1), id(2)}, t0) {
		t.Fatal("new ids refused")
	}
	if w.claim([]MessageID{id(3), id(2)}, t0) {
		t.Fatal("a seen id accepted")
	}
	if !w.claim([]MessageID{id(3)}, t0) {
		t.Fatal("an id of a refused frame was recorded")
	}
	if w.claim([]MessageID{id(4), id(5), id(4)}, t0) {
		t.Fatal("an id twice in one frame accepted")
	}
	if !w.claim([]MessageID{id(4), id(5)}, t0) {
		t.Fatal("ids of a refused frame were recorded")
	}
	if w.claim([]MessageID{id(1)}, t0.Add(2*time.Minute)) {
		t.Fatal("an id forgotten before keep passed")
	}
	if !w.claim([]MessageID{id(1)}, t0.Add(2*time.Minute+time.Millisecond)) {
		t.Fatal("an id remembered after keep passed")
	}
	if len(w.seen) != 1 {
		t.Fatalf("window holds %d ids after expiry, want 1", len(w.seen))
	}
}
