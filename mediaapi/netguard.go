package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ipFilter decides which addresses outbound fetches (remote media, URL previews)
// may connect to: anything in allowed, else anything not in denied. The check runs
// on the address actually dialled (net.Dialer.Control), so a name that resolves to
// a private address, a DNS answer that changes between check and use, or a redirect
// to such an address are all caught.
type ipFilter struct {
	allowed []netip.Prefix
	denied  []netip.Prefix
}

// newIPFilter parses the CIDR lists (already validated by config).
func newIPFilter(allowed, denied []string) (*ipFilter, error) {
	f := &ipFilter{}
	for _, c := range allowed {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("parsing allowed CIDR %q: %w", c, err)
		}
		f.allowed = append(f.allowed, p.Masked())
	}
	for _, c := range denied {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("parsing denied CIDR %q: %w", c, err)
		}
		f.denied = append(f.denied, p.Masked())
	}
	return f, nil
}

// Allowed reports whether ip may be connected to. IPv4-mapped IPv6 addresses are
// judged as the IPv4 address they carry.
func (f *ipFilter) Allowed(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	// The unspecified address reaches the local host on most systems, whatever
	// the lists say.
	if !ip.IsValid() || ip.IsUnspecified() {
		return false
	}
	for _, p := range f.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range f.denied {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// AllowedIP is Allowed for a net.IP.
func (f *ipFilter) AllowedIP(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && f.Allowed(a)
}

// errAddressBlocked is the error of a connection refused by the filter.
var errAddressBlocked = errors.New("address is not allowed")

// blockedError names the refused address.
type blockedError struct{ addr string }

func (e *blockedError) Error() string {
	return "connecting to " + e.addr + ": " + errAddressBlocked.Error()
}
func (e *blockedError) Unwrap() error { return errAddressBlocked }

// control is a net.Dialer ControlContext hook refusing filtered addresses.
func (f *ipFilter) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("network %s: %w", network, errAddressBlocked)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialling %q: %w", address, errAddressBlocked)
	}
	if !f.Allowed(ap.Addr()) {
		return &blockedError{addr: ap.Addr().String()}
	}
	return nil
}

// dialer returns a dialer whose every connection passes the filter.
func (f *ipFilter) dialer() *net.Dialer {
	return &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, ControlContext: f.control}
}

// checkHost resolves host and refuses it when any of its addresses is filtered.
// The dial-time check is what really protects; this one gives a clear error early.
func (f *ipFilter) checkHost(ctx context.Context, host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !f.Allowed(ip) {
			return &blockedError{addr: ip.String()}
		}
		return nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	for _, ip := range addrs {
		if !f.Allowed(ip) {
			return &blockedError{addr: ip.String()}
		}
	}
	return nil
}
