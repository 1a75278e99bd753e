package federationapi

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"hearth/config"
)

// ErrAddressDenied is returned when an outbound connection would reach a network
// that federation.denied_cidrs forbids (SSRF protection).
var ErrAddressDenied = errors.New("destination address is denied by federation.denied_cidrs")

// netGuard decides which addresses outbound federation connections may reach. It is
// applied to the resolved address of every connection (net.Dialer.Control), so DNS
// answers, SRV targets, redirects and .well-known delegation cannot lead around it.
type netGuard struct {
	allowed, denied []netip.Prefix
}

func newNetGuard(fc *config.Federation) (*netGuard, error) {
	g := &netGuard{}
	for _, c := range fc.AllowedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("federation.allowed_cidrs: %w", err)
		}
		g.allowed = append(g.allowed, p.Masked())
	}
	for _, c := range fc.DeniedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("federation.denied_cidrs: %w", err)
		}
		g.denied = append(g.denied, p.Masked())
	}
	return g, nil
}

// permitted reports whether ip may be connected to: allowed networks win over
// denied ones; anything in neither list is permitted.
func (g *netGuard) permitted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range g.denied {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// control is a net.Dialer Control function enforcing the guard.
func (g *netGuard) control(network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("federation: unsupported network %s", network)
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("federation: bad address %q: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("federation: bad address %q: %w", address, err)
	}
	if !g.permitted(ip) {
		return fmt.Errorf("%w: %s", ErrAddressDenied, ip)
	}
	return nil
}
