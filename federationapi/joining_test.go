package federationapi

import (
	"context"
	"testing"
	"time"
)

func TestJoinsInFlight(t *testing.T) {
	var j joinsInFlight
	// Nothing in flight: no wait.
	start := time.Now()
	j.wait(context.Background(), "!a:x")
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("waited with no join in flight")
	}
	// Two joins of one room: a transaction waits for both to end.
	end1, end2 := j.begin("!a:x"), j.begin("!a:x")
	waited := make(chan struct{})
	go func() {
		j.wait(context.Background(), "!a:x")
		close(waited)
	}()
	end1()
	select {
	case <-waited:
		t.Fatal("stopped waiting while a join was still in flight")
	case <-time.After(50 * time.Millisecond):
	}
	// Other rooms are not held up.
	j.wait(context.Background(), "!b:x")
	end2()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the joins ended")
	}
	if len(j.rooms) != 0 {
		t.Fatalf("rooms left behind: %v", j.rooms)
	}
	// A cancelled request stops waiting.
	defer j.begin("!c:x")()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	j.wait(ctx, "!c:x")
	if ctx.Err() == nil {
		t.Fatal("returned before the context ended")
	}
}
