// Package client is the typed Go client of the unibus membership service. It
// signs every request with the caller's nkeys user key, seals and opens room
// keys with the caller's nkeys curve (X25519) key, and resends a mutation
// whose reply was lost as the very same signed request, which the service
// answers "already applied" if the first attempt committed.
//
// A first program:
//
//	// Connect as your NATS user: docs/deploy.md's client user logs in with
//	// an nkey seed file and may only receive replies under its own inbox
//	// prefix.
//	user, err := nats.NkeyOptionFromSeed("client-user.nk")
//	if err != nil {
//		log.Fatal(err)
//	}
//	nc, err := nats.Connect("nats://127.0.0.1:4222", user, nats.CustomInboxPrefix("_INBOX_client"))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer nc.Close()
//
//	// The identity file `memberctl keygen --endpoint alice` wrote, and the
//	// service key the operator published (service_key in `nats micro info`):
//	// replies not signed by it are refused.
//	alice, err := identity.Load("alice.id")
//	if err != nil {
//		log.Fatal(err)
//	}
//	c := client.New(nc, alice, client.WithServiceKey(os.Getenv("MEMBERSHIP_SERVICE_KEY")))
//
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	// Create a room with bob: the room key is made and sealed here, to
//	// alice and bob; the service never sees it in clear.
//	room, key, err := c.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
//	switch {
//	case errors.Is(err, client.ErrExists):
//		// Created before: fetch and open alice's own sealed key instead.
//		key, _, err = c.Key(ctx, "ops", 0) // 0: the current epoch
//		if err != nil {
//			log.Fatal(err)
//		}
//	case errors.Is(err, client.ErrForbidden), errors.Is(err, client.ErrNotFound):
//		log.Fatalf("not allowed, or bob is not registered: %v", err)
//	case err != nil:
//		log.Fatal(err)
//	default:
//		fmt.Printf("room %s, epoch %d, created %s\n", room.ID, room.Epoch, time.UnixMilli(room.Created))
//	}
//	fmt.Printf("room key: %d bytes\n", len(key))
//
// End of the first program. Times on the wire types are Unix milliseconds
// of the service clock ([api.Room].Created: use time.UnixMilli); epochs
// count from 1.
//
// The client trusts nothing it reads from NATS: every reply is decoded with the
// protocol's strict, bounded decoder ([ErrMalformedReply]), and its
// signature verified against the pinned service key ([WithServiceKey]; by
// default the key of the first verified reply, moved only through a
// rotation statement signed by it; [WithUnverifiedReplies] opts out), bound
// to the request it answers (docs/protocol.md §16).
//
// [Client.Channel] talks in a room: messages on the room's subject sealed
// under the epoch's room key and signed by the sender (docs/protocol.md §19).
//
// Errors from the service are *api.Error values; match them with errors.Is
// and the sentinels re-exported here ([ErrForbidden], [ErrReplay], …).
package client
