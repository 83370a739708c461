package client_test

import (
	"testing"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// TestMethodsReturnNilOnError: every typed method that fails returns nil,
// not a zero or partly filled value a caller could mistake for the
// service's answer. Each case is refused by the service itself: bob is a
// registered member but no admin and not in alice's room, mallory is not
// registered, alice adds a member twice.
func TestMethodsReturnNilOnError(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	membertest.Member(t, s, admin, "carol")
	mallory, _ := identity.New("mallory")
	stranger := client.New(natstest.Connect(t, s), mallory)
	ctx := natstest.Ctx(t, 2)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"carol"}); err != nil {
		t.Fatal(err)
	}
	pub, _ := mallory.Public()

	for name, call := range map[string]func() (bool, error){
		"Register":          func() (bool, error) { v, err := bob.Register(ctx, pub, false); return v != nil, err },
		"Disable":           func() (bool, error) { v, err := bob.Disable(ctx, "alice"); return v != nil, err },
		"Enable":            func() (bool, error) { v, err := bob.Enable(ctx, "alice"); return v != nil, err },
		"Lookup":            func() (bool, error) { v, err := bob.Lookup(ctx, "nobody"); return v != nil, err },
		"Identities":        func() (bool, error) { v, err := bob.Identities(ctx, "", 10); return v != nil, err },
		"IdentityAuditPage": func() (bool, error) { v, err := bob.IdentityAuditPage(ctx, 0, 10); return v != nil, err },
		"Whoami":            func() (bool, error) { v, err := stranger.Whoami(ctx); return v != nil, err },
		"MyRooms":           func() (bool, error) { v, err := stranger.MyRooms(ctx, "", 10); return v != nil, err },
		"Room":              func() (bool, error) { v, err := bob.Room(ctx, "r1"); return v != nil, err },
		"Members":           func() (bool, error) { v, err := bob.Members(ctx, "r1", "", 10); return v != nil, err },
		"SealedKey":         func() (bool, error) { v, err := bob.SealedKey(ctx, "r1", 0); return v != nil, err },
		"AuditPage":         func() (bool, error) { v, err := bob.AuditPage(ctx, "r1", 0, 10); return v != nil, err },
		"AddMember":         func() (bool, error) { v, err := alice.AddMember(ctx, "r1", "carol"); return v != nil, err },
		"RemoveMember":      func() (bool, error) { v, err := bob.RemoveMember(ctx, "r1", "alice"); return v != nil, err },
		"Leave":             func() (bool, error) { v, err := bob.Leave(ctx, "r1"); return v != nil, err },
		"DeleteRoom":        func() (bool, error) { v, err := bob.DeleteRoom(ctx, "r1"); return v != nil, err },
		"CreateRoom":        func() (bool, error) { v, _, err := bob.CreateRoom(ctx, "r1", "chat.r1", nil); return v != nil, err },
		"Rekey":             func() (bool, error) { v, _, err := bob.Rekey(ctx, "r1"); return v != nil, err },
	} {
		got, err := call()
		if err == nil {
			t.Errorf("%s: no error; the case must be refused", name)
		} else if got {
			t.Errorf("%s failed (%v) but returned a value, want nil", name, err)
		}
	}
}
