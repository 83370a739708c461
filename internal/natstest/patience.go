package natstest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// PatienceEnv names the environment variable that sets [Patience].
const PatienceEnv = "MEMBERSHIP_TEST_PATIENCE"

// Patience is the one knob every test timeout derives from: how long a
// single step (a request with its retries, a server start, a condition a
// test waits for) may take before the test gives up. It is generous
// because the suite must pass on a loaded 2-core machine with another
// suite running beside it; a test that is correct never waits it out, so
// raising it costs nothing but the time to report a real failure.
// Longer waits are multiples of it. Set it with MEMBERSHIP_TEST_PATIENCE
// (a Go duration, e.g. 30s); default 10s.
var Patience = patience()

func patience() time.Duration {
	v := os.Getenv(PatienceEnv)
	if v == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		panic(fmt.Sprintf("%s=%q: want a positive Go duration such as 30s", PatienceEnv, v))
	}
	return d
}

// Within is n times [Patience].
func Within(n float64) time.Duration { return time.Duration(n * float64(Patience)) }

// Ctx returns a context that ends after n times [Patience] or at the
// test's cleanup, whichever comes first.
func Ctx(t testing.TB, n float64) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Within(n))
	t.Cleanup(cancel)
	return ctx
}

// Eventually calls cond until it returns nil, failing the test with its
// last error after n times [Patience]. It polls: the conditions it waits
// for (a stream's state, another process's answer) signal nothing.
func Eventually(t testing.TB, n float64, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(Within(n))
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, Within(n), err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}
