package rootinit

import (
	"fmt"
	"net"
	"time"

	"github.com/jsimonetti/rtnetlink/v2/rtnl"

	"github.com/custodian-project/custodian/firmware/config"
)

// linkWait bounds the wait for the network driver to register the interface.
const linkWait = 20 * time.Second

// bringUpNetwork brings up lo and the configured interface with its
// address and, if configured, the default route through the gateway.
func bringUpNetwork(n config.Network) error {
	prefix, err := n.Prefix()
	if err != nil {
		return err
	}
	conn, err := rtnl.Dial(nil)
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer conn.Close()
	lo, err := net.InterfaceByName("lo")
	if err == nil {
		err = conn.LinkUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	ifc, err := waitLink(n.Interface)
	if err != nil {
		return err
	}
	if err := conn.LinkUp(ifc); err != nil {
		return fmt.Errorf("bringing up %s: %w", n.Interface, err)
	}
	addr := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}
	if err := conn.AddrAdd(ifc, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", n.Address, n.Interface, err)
	}
	gw, ok := n.GatewayAddr()
	if !ok {
		return nil
	}
	anyDst := net.IPNet{IP: make(net.IP, gw.BitLen()/8), Mask: net.CIDRMask(0, gw.BitLen())}
	if err := conn.RouteAdd(ifc, anyDst, gw.AsSlice()); err != nil {
		return fmt.Errorf("adding the default route through %s: %w", gw, err)
	}
	return nil
}

func waitLink(name string) (*net.Interface, error) {
	deadline := time.Now().Add(linkWait)
	for {
		ifc, err := net.InterfaceByName(name)
		if err == nil {
			return ifc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no network interface %s after %s", name, linkWait)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
