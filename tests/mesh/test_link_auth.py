"""Peer-link authentication: a wrong token is refused, logged on both sides, and gets nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from mesh.runtime import link
from mesh.runtime.node import Node
from mesh.testing import NatsServer, TcpProxy
from tests.helpers import hello_answer, node_config, unique, wait_for


async def test_wrong_token_is_refused_with_reason_in_both_logs(
    tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    tag = unique()
    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        accept=[{"id": "site-a", "token": "right-token"}],
        ingress=[{"from": "bus", "topic": f"{tag}.>"}],
        egress=[{"to": "bus", "topic": "#", "target": f"{tag}-out.{{1}}"}],
    )
    async with Node(b_cfg).serve() as b:
        a_cfg = node_config(
            tmp_path,
            "site-a",
            brokers={"bus": {"kind": "memory", "name": tag}},
            peers=[
                {"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "wrong-token"}
            ],
            egress=[{"to": "bus", "topic": f"{tag}/#", "target": "out/{1}"}],
        )
        async with Node(a_cfg).serve() as a:
            await wait_for(lambda: a.refusals.get("site-b"), what="the refusal")
            # Give a wrongly admitted link every chance to exchange something.
            await asyncio.sleep(0.5)
            assert a.sessions == {} and b.sessions == {}
            assert a.table.routes() == [r for r in a.table.routes() if r.next_hop is None]
            assert b.table.routes() == [r for r in b.table.routes() if r.next_hop is None]
            assert b.metrics.total("mesh_link_sent_events_total") == 0
            assert a.metrics.total("mesh_link_received_events_total") == 0
            assert a.peers()[0]["state"] == "refused"

    reason = "wrong token for node 'site-a'"
    # Both sides say who and why, once (repeats of a fault are only counted).
    acceptor = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("accept[127.0.0.1] refused: link site-a:")
    ]
    dialer = [r.getMessage() for r in caplog.records if r.getMessage().startswith("link[site-b]")]
    assert len(acceptor) == 1 and reason in acceptor[0]
    assert len(dialer) == 1 and reason in dialer[0]


async def test_unknown_node_and_wrong_peer_identity_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    b_cfg = node_config(tmp_path, "site-b", accept=[{"id": "site-a", "token": "t"}])
    async with Node(b_cfg).serve() as b:
        # site-c is not in site-b's accept list.
        c_cfg = node_config(
            tmp_path,
            "site-c",
            peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "t"}],
        )
        async with Node(c_cfg).serve() as c:
            await wait_for(lambda: c.refusals.get("site-b"), what="the refusal")
            assert "not allowed to connect" in c.refusals["site-b"]
        # site-a dials site-b's address believing it is site-x: the dialer refuses.
        a_cfg = node_config(
            tmp_path,
            "site-a",
            peers=[{"id": "site-x", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "t"}],
        )
        async with Node(a_cfg).serve() as a:
            await wait_for(lambda: a.refusals.get("site-x"), what="the identity refusal")
            assert "is 'site-b', not 'site-x'" in a.refusals["site-x"]


async def test_a_wildcard_token_cannot_claim_an_id_with_its_own_entry(tmp_path: Path) -> None:
    """Through ``accept: '*'`` a token holder claimed another site's id and drained
    what was queued for it; an id with its own entry now needs that entry's token."""
    b_cfg = node_config(
        tmp_path,
        "site-b",
        accept=[{"id": "site-a", "token": "a-token"}, {"id": "*", "token": "any-token"}],
    )
    async with Node(b_cfg).serve() as b:
        url = f"ws://127.0.0.1:{b.port}/mesh"
        rogue_cfg = node_config(
            tmp_path, "site-a", peers=[{"id": "site-b", "url": url, "token": "any-token"}]
        )
        async with Node(rogue_cfg).serve() as rogue:
            await wait_for(lambda: rogue.refusals.get("site-b"), what="the refusal")
            assert "wrong token for node 'site-a'" in rogue.refusals["site-b"]
            assert b.sessions == {}
        # The wildcard still admits ids without an entry of their own, and the
        # owner of an entry gets in with its token.
        for node_id, token in (("site-z", "any-token"), ("site-a", "a-token")):
            cfg = node_config(
                tmp_path / node_id, node_id, peers=[{"id": "site-b", "url": url, "token": token}]
            )
            async with Node(cfg).serve():
                await wait_for(lambda n=node_id: n in b.sessions, 10, f"{node_id} linked")


async def test_a_hello_kept_open_with_pings_is_refused_at_its_deadline(tmp_path: Path) -> None:
    """The hello has one deadline; pings, which restart aiohttp's receive
    timeout, do not extend it."""
    b_cfg = node_config(
        tmp_path,
        "site-b",
        accept=[{"id": "site-a", "token": "t"}],
        limits={"hello_timeout": 1.0},
    )
    async with Node(b_cfg).serve() as b, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{b.port}/mesh", autoping=True)
        start = asyncio.get_running_loop().time()

        async def keep_pinging() -> None:
            while not ws.closed:
                await ws.ping()
                await asyncio.sleep(0.2)

        pinger = asyncio.create_task(keep_pinging())
        try:
            async with asyncio.timeout(5):
                while (msg := await ws.receive()).type is not aiohttp.WSMsgType.CLOSE:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        assert "no hello within" in msg.data
                    elif msg.type is aiohttp.WSMsgType.CLOSED:
                        break
        finally:
            pinger.cancel()
        took = asyncio.get_running_loop().time() - start
        assert took < 2.5, f"the hello was held open for {took:.1f}s"
        assert ws.close_code == link.CLOSE_REFUSED
        assert b.metrics.get("mesh_link_refused_total", reason="no") == 1


async def test_connections_in_their_hello_are_bounded(tmp_path: Path) -> None:
    """Beyond limits.max_pending_hellos, /mesh answers 503 before the upgrade;
    a slot freed is usable again, and a real peer links."""
    b_cfg = node_config(
        tmp_path,
        "site-b",
        accept=[{"id": "site-a", "token": "t"}],
        limits={"max_pending_hellos": 2},
    )
    async with Node(b_cfg).serve() as b, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{b.port}/mesh"
        idle = [await http.ws_connect(url) for _ in range(2)]
        await wait_for(lambda: b.pending_hellos == 2, 5, "two connections in their hello")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 503
        assert b.metrics.get("mesh_link_refused_total", reason="busy") == 1

        await idle.pop().close()
        await wait_for(lambda: b.pending_hellos == 1, 5, "a slot freed")
        a_cfg = node_config(tmp_path, "site-a", peers=[{"id": "site-b", "url": url, "token": "t"}])
        async with Node(a_cfg).serve():
            await wait_for(lambda: "site-a" in b.sessions, 10, "the real peer linked")
        for ws in idle:
            await ws.close()


async def test_a_rotated_token_closes_the_links_it_admitted_and_only_those(
    tmp_path: Path,
) -> None:
    """A rotated token used to leave the old link up; reload now closes it, while a
    link whose token still matches stays the same session."""
    accept = [{"id": "site-a", "token": "old-a"}, {"id": "site-c", "token": "c-token"}]
    b_cfg = node_config(tmp_path, "site-b", accept=accept)
    async with Node(b_cfg).serve() as b:
        url = f"ws://127.0.0.1:{b.port}/mesh"

        def dialer(node_id: str, token: str) -> Node:
            cfg = node_config(
                tmp_path / node_id, node_id, peers=[{"id": "site-b", "url": url, "token": token}]
            )
            return Node(cfg)

        async with dialer("site-a", "old-a").serve() as a, dialer("site-c", "c-token").serve():
            await wait_for(lambda: {"site-a", "site-c"} <= set(b.sessions), what="both links")
            kept = b.sessions["site-c"]
            rotated = [{"id": "site-a", "token": "new-a"}, accept[1]]
            await b.reload(node_config(tmp_path, "site-b", accept=rotated))
            await wait_for(lambda: "site-a" not in b.sessions, what="site-a's link closed")
            assert b.metrics.get("mesh_link_closed_by_reload_total", peer="site-a") == 1
            # The old token no longer gets in: site-a's redial is refused.
            await wait_for(lambda: a.refusals.get("site-b"), what="site-a's redial refused")
            assert "wrong token for node 'site-a'" in a.refusals["site-b"]
            assert b.sessions.get("site-c") is kept
            # With the new token it links again.
            new_a = node_config(
                tmp_path / "site-a",
                "site-a",
                peers=[{"id": "site-b", "url": url, "token": "new-a"}],
            )
            await a.reload(new_a)
            await wait_for(lambda: "site-a" in b.sessions, what="site-a linked with the new token")
            assert b.sessions.get("site-c") is kept


async def test_a_live_link_is_not_taken_over_by_a_second_hello_for_its_id(
    tmp_path: Path,
) -> None:
    """The token holder that claimed a linked site's id used to swap its session out;
    now the claim is refused while that session is alive, and only a session that
    has gone silent (its packets vanish) is replaced by the new hello."""
    b_cfg = node_config(tmp_path, "site-b", accept=[{"id": "site-a", "token": "a-token"}])
    async with Node(b_cfg).serve() as b:
        proxy = await TcpProxy(b.port).start()
        try:
            a_cfg = node_config(
                tmp_path / "a",
                "site-a",
                peers=[
                    {"id": "site-b", "url": f"ws://127.0.0.1:{proxy.port}/mesh", "token": "a-token"}
                ],
            )
            async with Node(a_cfg).serve():
                await wait_for(lambda: "site-a" in b.sessions, what="site-a linked")
                first = b.sessions["site-a"]
                url = f"ws://127.0.0.1:{b.port}/mesh"
                # An idle link stays alive (beacons), so the claim is refused, after a
                # few heartbeat intervals just as at once.
                for _ in range(2):
                    answer = await hello_answer(url, "site-a", "a-token")
                    assert answer["type"] == "refused"
                    assert str(answer["reason"]).startswith("already linked: node 'site-a'")
                    assert b.sessions["site-a"] is first
                    await asyncio.sleep(link.BEACON * 1.5)
                # A partition: nothing arrives any more. Once the session is silent
                # for STALE_AFTER the claim takes over (or the session has been closed).
                proxy.blackhole()
                # Counted under its own reason label (the first word of the reason).
                assert b.metrics.get("mesh_link_refused_total", reason="already") == 2
                await wait_for(
                    lambda: not first.alive() or "site-a" not in b.sessions,
                    link.STALE_AFTER + 5,
                    "the session silent or closed",
                )
                answer = await hello_answer(url, "site-a", "a-token")
                assert answer["type"] == "welcome"
        finally:
            await proxy.close()
