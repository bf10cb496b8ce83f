#!/bin/sh
# Pin every connection a router sends to a faasd node to that node, so a
# planned stop (faasd withdraws its routes, drains, then stops) loses no
# connection that is in flight when the router drops the node's path.
#
# Plain ECMP keeps no state: when a next hop leaves the group, the kernel
# rehashes the flows and an established connection lands on a node that
# never saw its SYN, which resets it. Here conntrack remembers the link a
# connection's first packet left on (its mark), and later packets of that
# connection in the client-to-function direction are routed by a table
# that sends them over that same link, whatever ECMP does meanwhile.
#
# Usage, on the router, once per boot (and again for a new node link):
#   pin-flows.sh IFACE=NEXTHOP [IFACE=NEXTHOP ...]
# e.g. pin-flows.sh eth1=192.0.2.1 eth2=192.0.2.5 eth3=2001:db8::1
# IFACE is the router's link to a node, NEXTHOP that node's address on it
# (its BGP neighbour address). Each pair gets fwmark and table 0x4641+i;
# set PIN_BASE to move that range.
set -eu
[ $# -gt 0 ] || { echo "usage: $0 IFACE=NEXTHOP..." >&2; exit 2; }
base=$((${PIN_BASE:-0x4641}))

for tool in iptables ip6tables; do
    # Restore the mark only on packets from the client's side (the
    # original direction): a reply with the mark would be routed back
    # to the node it came from.
    for chain in PREROUTING OUTPUT; do
        rule="-m conntrack --ctstate ESTABLISHED,RELATED --ctdir ORIGINAL -j CONNMARK --restore-mark"
        # shellcheck disable=SC2086
        $tool -t mangle -C $chain $rule 2>/dev/null || $tool -t mangle -A $chain $rule
    done
done

i=0
for pair in "$@"; do
    iface=${pair%%=*}
    nexthop=${pair#*=}
    [ -n "$iface" ] && [ -n "$nexthop" ] && [ "$iface" != "$pair" ] || {
        echo "$0: '$pair' is not IFACE=NEXTHOP" >&2
        exit 2
    }
    mark=$((base + i))
    case $nexthop in
        *:*) tool=ip6tables family=-6 ;;
        *) tool=iptables family=-4 ;;
    esac
    rule="-o $iface -m conntrack --ctstate NEW -j CONNMARK --set-mark $mark"
    # shellcheck disable=SC2086
    $tool -t mangle -C POSTROUTING $rule 2>/dev/null || $tool -t mangle -A POSTROUTING $rule
    ip $family route replace default via "$nexthop" dev "$iface" table "$mark"
    ip $family rule del fwmark "$mark" lookup "$mark" 2>/dev/null || true
    ip $family rule add fwmark "$mark" lookup "$mark" priority 100
    i=$((i + 1))
done
