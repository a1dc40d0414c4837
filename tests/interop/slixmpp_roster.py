#!/usr/bin/python3
"""Roster and presence subscriptions with beamline from slixmpp.

A copy of slixmpp_chat.py's login (STARTTLS, SCRAM only, no channel
binding by default: see that script for why), with two phases:

--phase subscribe: logs in, gets the roster, sends initial presence, adds
    --peer to the roster (name --name, group --group) and asks for its
    presence. slixmpp's own roster logic answers the peer's requests
    (auto_authorize, auto_subscribe). Done once the roster says
    subscription 'both' for the peer and the peer's presence was seen;
    then it disconnects.
--phase offline: logs in, gets the roster (printed), sends initial
    presence, and waits for a chat message from --peer with body --expect
    (sent while it was offline) and for the peer's presence (the answer to
    the server's probe). Then it disconnects.

Every step is one JSON line on stdout:

    {"event": "ready", "jid": "...", "mechanism": "...", "tls": "..."}
    {"event": "roster", "items": {"bob@localhost": {"subscription": "both", ...}}}
    {"event": "subscribe", "from": "..."}      (a request slixmpp answered)
    {"event": "subscribed", "from": "..."}
    {"event": "presence", "from": "...", "type": "available"}
    {"event": "message", "from": "...", "body": "...", "delayed": true}
    {"event": "done"}  or  {"event": "error", "reason": "..."}

Exit status: 0 on success, 1 on failure, 2 on the overall --timeout.
Needs Debian's python3-slixmpp.
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

try:
    import slixmpp
except ImportError as e:  # pragma: no cover - reported to the caller
    print(json.dumps({"event": "error", "reason": f"import slixmpp: {e}"}), flush=True)
    sys.exit(3)


def emit(event, **fields):
    """One JSON line on stdout, flushed at once (the caller reads it live)."""
    print(json.dumps({"event": event, **fields}), flush=True)


class RosterBot(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.peer = slixmpp.JID(args.peer).bare
        self.result = asyncio.get_event_loop().create_future()
        self.closed = asyncio.get_event_loop().create_future()
        self.peer_presence = asyncio.get_event_loop().create_future()
        self.offline_message = asyncio.get_event_loop().create_future()
        self.mechanism = None

        self.register_plugin("xep_0203")  # delayed delivery
        # slixmpp answers subscription requests itself.
        self.auto_authorize = True
        self.auto_subscribe = True
        mechs = self["feature_mechanisms"]
        mechs.use_mechs = {
            name
            for name in __import__("slixmpp.util.sasl.client", fromlist=["MECHANISMS"]).MECHANISMS
            if name.startswith("SCRAM-") and not name.endswith("-PLUS")
        }
        default_credentials = mechs.sasl_callback

        def credentials(required, optional):
            creds = default_credentials(required, optional)
            creds.pop("channel_binding", None)
            return creds

        mechs.sasl_callback = credentials

        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("auth_success", self.on_auth_success)
        self.add_event_handler("failed_all_auth", self.on_failed)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("connection_failed", self.on_failed)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("presence_subscribe", self.on_subscribe)
        self.add_event_handler("presence_subscribed", self.on_subscribed)
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("message", self.on_message)

    def fail(self, reason):
        if not self.result.done():
            emit("error", reason=reason)
            self.result.set_result(False)
        self.disconnect(wait=1.0)

    def on_auth_success(self, _stanza):
        self.mechanism = self["feature_mechanisms"].mech.name

    def on_failed(self, event=None):
        self.fail(f"login failed: {event}")

    def on_stream_error(self, error):
        self.fail(f"stream error: {error['condition']} {error['text']}".strip())

    def on_disconnected(self, reason):
        if not self.closed.done():
            self.closed.set_result(True)
        if not self.result.done():
            emit("error", reason=f"disconnected: {reason}")
            self.result.set_result(False)

    def on_subscribe(self, presence):
        emit("subscribe", **{"from": str(presence["from"])})

    def on_subscribed(self, presence):
        emit("subscribed", **{"from": str(presence["from"])})

    def on_available(self, presence):
        emit("presence", type="available", **{"from": str(presence["from"])})
        if presence["from"].bare == self.peer and not self.peer_presence.done():
            self.peer_presence.set_result(str(presence["from"]))

    def on_message(self, msg):
        if msg["type"] not in ("chat", "normal"):
            return
        delayed = msg.xml.find("{urn:xmpp:delay}delay") is not None
        emit("message", body=msg["body"], delayed=delayed, **{"from": str(msg["from"])})
        if msg["from"].bare == self.peer and not self.offline_message.done():
            self.offline_message.set_result(msg["body"])

    def roster_items(self):
        items = {}
        for jid in self.client_roster:
            item = self.client_roster[jid]
            items[str(jid)] = {
                "subscription": item["subscription"],
                "name": item["name"],
                "groups": sorted(item["groups"]),
                "pending_out": item["pending_out"],
            }
        return items

    async def on_session_start(self, _event):
        try:
            await self.get_roster(timeout=10)
            tls = self.socket.version() if isinstance(self.socket, ssl.SSLObject) else None
            emit("ready", jid=str(self.boundjid), mechanism=self.mechanism, tls=tls,
                 rosterver="rosterver" in self.features)
            emit("roster", items=self.roster_items())
            self.send_presence()
            if self.args.phase == "subscribe":
                await self.update_roster(self.peer, name=self.args.name,
                                         groups=[self.args.group], timeout=10)
                self.send_presence_subscription(pto=self.peer, ptype="subscribe")
                emit("subscribe_sent", to=self.peer)
                await asyncio.wait_for(self.peer_presence, self.args.timeout)
                while self.client_roster[self.peer]["subscription"] != "both":
                    await asyncio.sleep(0.1)
                emit("roster", items=self.roster_items())
            else:
                body = await asyncio.wait_for(self.offline_message, self.args.timeout)
                if body != self.args.expect:
                    self.fail(f"body {body!r}, expected {self.args.expect!r}")
                    return
                await asyncio.wait_for(self.peer_presence, self.args.timeout)
        except Exception as e:  # any failure ends the run with a reason
            self.fail(f"{type(e).__name__}: {e}")
            return
        emit("done")
        self.result.set_result(True)
        self.disconnect(wait=5.0)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jid", required=True)
    p.add_argument("--password", default=os.environ.get("XMPP_PASSWORD"))
    p.add_argument("--server", required=True, help="HOST:PORT of the c2s (STARTTLS) listener")
    p.add_argument("--peer", required=True, help="the contact's bare JID")
    p.add_argument("--phase", choices=["subscribe", "offline"], required=True)
    p.add_argument("--name", default="Bob", help="roster name for the peer")
    p.add_argument("--group", default="Friends", help="roster group for the peer")
    p.add_argument("--expect", help="body of the offline message (phase offline)")
    p.add_argument("--ca-cert", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    if args.password is None:
        p.error("--password or $XMPP_PASSWORD is required")
    if args.phase == "offline" and args.expect is None:
        p.error("--phase offline needs --expect")
    host, _, port = args.server.rpartition(":")
    args.address = (host.strip("[]"), int(port))
    return args


async def run(args):
    bot = RosterBot(args)
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=args.ca_cert)
    bot.ssl_context = ctx
    bot.ca_certs = args.ca_cert
    bot.connect(address=args.address, force_starttls=True)
    try:
        ok = await asyncio.wait_for(asyncio.shield(bot.result), args.timeout + 5)
    except asyncio.TimeoutError:
        emit("error", reason=f"timed out after {args.timeout} s")
        bot.abort()
        return 2
    if ok:
        try:
            await asyncio.wait_for(bot.closed, 6.0)
        except asyncio.TimeoutError:
            bot.abort()
    else:
        bot.abort()
    return 0 if ok else 1


def main():
    args = parse_args()
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    code = loop.run_until_complete(run(args))
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
