package service

import (
	"context"
	"strings"
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// TestBindOps: the operation table says which ops mutate; a handler of the
// other kind, a missing one or one without a row stops the service from
// starting, and the service's own handlers match the table.
func TestBindOps(t *testing.T) {
	if _, err := (&Service{}).operations(); err != nil {
		t.Fatalf("the service's handlers against api.Ops: %v", err)
	}
	read := func(context.Context, *call) (any, error) { return nil, nil }
	mutate := func(context.Context, *call) (*mutation, error) { return nil, nil }
	get := api.OpSpec{Op: subjects.OpRoomGet}
	add := api.OpSpec{Op: subjects.OpRoomAdd, Mutates: true}
	tests := []struct {
		name  string
		reads map[subjects.Op]readFunc
		muts  map[subjects.Op]mutateFunc
		err   string
	}{
		{"match", map[subjects.Op]readFunc{get.Op: read}, map[subjects.Op]mutateFunc{add.Op: mutate}, ""},
		{"mutation served as a read", map[subjects.Op]readFunc{get.Op: read, add.Op: read}, nil, "room.add (mutates: true) has no handler"},
		{"read served as a mutation", nil, map[subjects.Op]mutateFunc{get.Op: mutate, add.Op: mutate}, "room.get (mutates: false) has no handler"},
		{"handler without a row", map[subjects.Op]readFunc{get.Op: read, subjects.OpWhoami: read}, map[subjects.Op]mutateFunc{add.Op: mutate}, "3 handlers for 2 operations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := bindOps([]api.OpSpec{get, add}, tt.reads, tt.muts)
			if tt.err == "" {
				if err != nil || len(ops) != 2 || ops[0].read == nil || ops[1].mutate == nil {
					t.Fatalf("bindOps = %+v, %v", ops, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("bindOps error = %v, want %q", err, tt.err)
			}
		})
	}
}
