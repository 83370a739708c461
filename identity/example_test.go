package identity_test

import (
	"fmt"

	"github.com/unibus/membership/identity"
)

func ExampleNew() {
	id, _ := identity.New("carol")
	pub, _ := id.Public()
	fmt.Println(pub.Endpoint, pub.SignKey[:1], pub.XKey[:1])
	// Output: carol U X
}
