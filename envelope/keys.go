package envelope

import "github.com/nats-io/nkeys"

// nkeys' own validators decode leniently (a key with leading white space
// passes), so a key that verifies could still differ, byte for byte, from
// the one stored for its owner and index other KV keys. These accept only
// the canonical form: 56 characters of the base32 alphabet.
func canonicalKey(k string) bool {
	if len(k) != 56 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// IsUserKey reports whether k is a canonical nkeys user public key (U…).
func IsUserKey(k string) bool { return canonicalKey(k) && nkeys.IsValidPublicUserKey(k) }

// IsCurveKey reports whether k is a canonical nkeys curve public key (X…).
func IsCurveKey(k string) bool { return canonicalKey(k) && nkeys.IsValidPublicCurveKey(k) }

// IsServerKey reports whether k is a canonical nkeys server public key (N…).
func IsServerKey(k string) bool { return canonicalKey(k) && nkeys.IsValidPublicServerKey(k) }
