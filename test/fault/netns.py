"""A network partition between the primary and the standby, with network namespaces made here
(used by test/fault/failover.py's `partition` scenario).

Topology (addresses only inside 10.210.0.0/16, on links this module creates and removes):

    root namespace: monitor, pixd, the test's clients
      pxa0 10.210.1.1 ---- pxa1 10.210.1.2  namespace pixha-a: node1
      pxb0 10.210.2.1 ---- pxb1 10.210.2.2  namespace pixha-b: node2
                           pxab 10.210.3.1 ---- pxba 10.210.3.2   (the only path between the nodes)

Each node reaches the other through pxab/pxba only (host routes with the node's own address as
source, so the other side's pg_hba rules match), and the monitor through its own link. Cutting
pxab/pxba separates primary and standby while both still see the monitor and pixd. The root
namespace needs no forwarding. Everything is removed at the end, and before the start (leftovers of
an interrupted run).
"""

import os
import subprocess
import time

NS = {1: "pixha-a", 2: "pixha-b"}
HOST = {1: "10.210.1.2", 2: "10.210.2.2"}
GW = {1: "10.210.1.1", 2: "10.210.2.1"}
PEER_LINK = {1: ("pxab", "10.210.3.1"), 2: ("pxba", "10.210.3.2")}


def ip(*args, check=True):
    out = subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def teardown():
    for ns in NS.values():
        ip("netns", "del", ns, check=False)
    for dev in ("pxa0", "pxb0"):
        ip("link", "del", dev, check=False)


def setup():
    """Returns None, or why namespaces cannot be made here."""
    teardown()
    try:
        for n, ns in NS.items():
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            root_dev, ns_dev = ("pxa0", "pxa1") if n == 1 else ("pxb0", "pxb1")
            ip("link", "add", root_dev, "type", "veth", "peer", "name", ns_dev, "netns", ns)
            ip("addr", "add", f"{GW[n]}/24", "dev", root_dev)
            ip("link", "set", root_dev, "up")
            ip("-n", ns, "addr", "add", f"{HOST[n]}/24", "dev", ns_dev)
            ip("-n", ns, "link", "set", ns_dev, "up")
        ip("-n", NS[1], "link", "add", "pxab", "type", "veth", "peer", "name", "pxba", "netns", NS[2])
        for n in (1, 2):
            dev, addr = PEER_LINK[n]
            ip("-n", NS[n], "addr", "add", f"{addr}/24", "dev", dev)
        heal()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        teardown()
        return str(e)
    return None


def cut():
    """The nodes can no longer reach each other (the link between them is down)."""
    for n in (1, 2):
        ip("-n", NS[n], "link", "set", PEER_LINK[n][0], "down")


def heal():
    for n in (1, 2):
        dev = PEER_LINK[n][0]
        other = 2 if n == 1 else 1
        ip("-n", NS[n], "link", "set", dev, "up")
        ip("-n", NS[n], "route", "replace", f"{HOST[other]}/32", "via", PEER_LINK[other][1], "dev", dev,
           "src", HOST[n])


def formation_env():
    return {"PIX_HA_NETNS1": NS[1], "PIX_HA_NETNS2": NS[2], "PIX_HA_HOST1": HOST[1], "PIX_HA_HOST2": HOST[2],
            "PIX_HA_MONITOR_HOST1": GW[1], "PIX_HA_MONITOR_HOST2": GW[2],
            "PIX_HA_MONITOR_LISTEN": f"127.0.0.1,{GW[1]},{GW[2]}", "PIX_HA_MONITOR_CIDR": "10.210.0.0/16"}


def partition_scenario(formation_cls, directory, port, run_scenario, make_psql, fl):
    """A formation of its own in the namespaces; the link between the nodes cut for 15 s mid-drain."""
    why = setup()
    if why is not None:
        return {"name": "partition", "verdict": "SKIP", "violations": [],
                "skipped": f"network namespaces cannot be made here ({why})"}
    saved_env = {k: os.environ.get(k) for k in formation_env()}
    saved_psql = fl.psql
    os.environ.update(formation_env())
    formation = formation_cls(directory, port)
    try:
        formation.stop()
        subprocess.run(["rm", "-rf", directory], check=True)
        formation.start()
        # pixd and the test's clients come from the root namespace's side of each link; the
        # standby's pg_hba.conf is the primary's copy: admit them on both nodes.
        for n in (1, 2):
            pgdata = os.path.join(directory, f"node{n}")
            with open(os.path.join(pgdata, "pg_hba.conf"), "a") as f:
                f.write("host all all 10.210.0.0/16 trust # test/fault/netns.py\n")
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(fl.PGBIN, "pg_ctl"), "reload", "-D",
                            pgdata], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        fl.psql = make_psql(formation.conninfo, default_db="pix")
        # Both ends notice a silent peer within seconds (the default is a minute).
        for n in (1, 2):
            for sql in ("ALTER SYSTEM SET wal_sender_timeout = '3s'", "ALTER SYSTEM SET wal_receiver_timeout = '3s'",
                        "SELECT pg_reload_conf()"):
                fl.psql(sql, dbname="pix", conninfo=f"host={HOST[n]} port={port + n}")
        formation.wait_ready()

        def fault(d, pixd, events, info):
            while time.monotonic() < d.t0 + 8:
                time.sleep(0.05)
            old = formation.primary()
            info["t_fault"] = time.monotonic()
            cut()
            events.append(f"t=8s link between node1 and node2 cut (primary: node{old})")
            deadline = time.monotonic() + 15
            seen = []
            while time.monotonic() < deadline:
                state = ", ".join(f"node{n} {rep}" for n, (rep, _) in sorted(formation.nodes().items()))
                if not seen or seen[-1] != state:
                    seen.append(state)
                time.sleep(0.5)
            heal()
            events.append("link restored after 15 s; states seen: " + " -> ".join(seen))
            info["old_primary"] = old
            info["new_primary"] = formation.primary()

        r = run_scenario("partition", formation, 40, fault)
        formation.wait_ready(timeout=120)
        r["events"].append("formation back to primary + secondary after the partition healed")
        return r
    finally:
        fl.psql = saved_psql
        formation.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        teardown()
