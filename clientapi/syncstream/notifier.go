package syncstream

import (
	"sync"

	"maunium.net/go/mautrix/id"
)

// Notifier wakes /sync requests waiting for news for a user. Producers publish
// their data first and wake afterwards; a waiter listens before it looks at the
// data, so no wake is lost between looking and waiting.
type Notifier struct {
	mu     sync.Mutex
	users  map[id.UserID]*waitSlot
	closed bool
	done   chan struct{}
}

type waitSlot struct {
	ch   chan struct{}
	refs int
}

// NewNotifier returns a notifier with nobody waiting.
func NewNotifier() *Notifier {
	return &Notifier{users: make(map[id.UserID]*waitSlot), done: make(chan struct{})}
}

// Waiter is one request's interest in a user's news.
type Waiter struct {
	n    *Notifier
	user id.UserID
	ch   chan struct{}
}

// Listen registers interest in userID's news. The waiter must be stopped.
func (n *Notifier) Listen(userID id.UserID) *Waiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return &Waiter{n: n, user: userID, ch: n.done}
	}
	s := n.users[userID]
	if s == nil {
		s = &waitSlot{ch: make(chan struct{})}
		n.users[userID] = s
	}
	s.refs++
	return &Waiter{n: n, user: userID, ch: s.ch}
}

// C is closed when the user is woken after Listen or the last Rearm.
func (w *Waiter) C() <-chan struct{} { return w.ch }

// Rearm prepares the waiter for the next wake. Call it after C fired and before
// looking at the data again.
func (w *Waiter) Rearm() {
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		w.ch = n.done
		return
	}
	if s := n.users[w.user]; s != nil {
		w.ch = s.ch
	}
}

// Stop withdraws the waiter's interest.
func (w *Waiter) Stop() {
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.users[w.user]; s != nil {
		if s.refs--; s.refs <= 0 {
			delete(n.users, w.user)
		}
	}
}

// Wake wakes every request waiting for userID.
func (n *Notifier) Wake(userID id.UserID) {
	n.mu.Lock()
	n.wakeLocked(userID)
	n.mu.Unlock()
}

// WakeUsers wakes the requests of each user in users.
func (n *Notifier) WakeUsers(users []id.UserID) {
	if len(users) == 0 {
		return
	}
	n.mu.Lock()
	for _, u := range users {
		n.wakeLocked(u)
	}
	n.mu.Unlock()
}

func (n *Notifier) wakeLocked(u id.UserID) {
	if s := n.users[u]; s != nil {
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// Waiting reports whether a request is waiting for userID.
func (n *Notifier) Waiting(userID id.UserID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.users[userID] != nil
}

// Close wakes every waiter for good: later waiters return at once.
func (n *Notifier) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	close(n.done)
	for u, s := range n.users {
		close(s.ch)
		delete(n.users, u)
	}
}
