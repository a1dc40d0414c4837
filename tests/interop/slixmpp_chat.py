#!/usr/bin/python3
"""Chat with beamline from slixmpp, an XMPP client library not written here.

Logs in over STARTTLS with SCRAM (PLAIN is never allowed), sends initial
presence, checks the stream with an IQ round trip, then prints a `ready`
line. It waits for a chat message with body --expect from --peer, replies
to it with --reply, sends --send to the peer's bare JID, and disconnects.
Without --expect it sends --send to --peer first and waits for one answer.

Every step is printed on stdout as one JSON object per line:

    {"event": "features", "mechanisms": [...], "starttls": false}
    {"event": "auth", "mechanism": "SCRAM-SHA-512"}
    {"event": "ready", "jid": "...", "mechanism": "...", "tls": "TLSv1.3"}
    {"event": "message", "from": "...", "type": "chat", "body": "..."}
    {"event": "sent", "to": "...", "body": "..."}
    {"event": "done"}  or  {"event": "error", "reason": "..."}
    {"event": "closed", "reason": null}

Channel binding: slixmpp 1.8 binds only with tls-unique, which TLS 1.3
does not have (RFC 9266) and beamline never offers (it offers
tls-exporter and tls-server-end-point, XEP-0440); with binding data but a
non-PLUS mechanism it sends the gs2 flag `y`, which a server offering
-PLUS must refuse as a downgrade (RFC 5802 §6). So by default
(--channel-binding none) the script gives slixmpp no binding data: it then
picks the strongest plain SCRAM with flag `n`. --channel-binding slixmpp
keeps slixmpp's own behaviour (works when the server offers no -PLUS).

Exit status: 0 on success, 1 on any failure (authentication, stream error,
wrong mechanism, unexpected message), 2 on the overall --timeout.

Run it by hand against `beamline serve` (defaults: host localhost,
127.0.0.1:5222, self-signed certificate in data/tls/cert.pem), with two
accounts made by `beamline ctl register USER localhost PASSWORD`. bob
waits, alice speaks first:

    /usr/bin/python3 tests/interop/slixmpp_chat.py --jid bob@localhost \
        --password pw-bob --server 127.0.0.1:5222 --ca-cert data/tls/cert.pem \
        --peer alice@localhost --expect hi --reply hello --send bye &
    sleep 3   # until bob prints `ready` (no offline storage yet)
    /usr/bin/python3 tests/interop/slixmpp_chat.py --jid alice@localhost \
        --password pw-alice --server 127.0.0.1:5222 --ca-cert data/tls/cert.pem \
        --peer bob@localhost --send hi

Needs Debian's python3-slixmpp (`apt-get install python3-slixmpp`).
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
    from slixmpp.exceptions import IqError, IqTimeout
except ImportError as e:  # pragma: no cover - reported to the caller
    print(json.dumps({"event": "error", "reason": f"import slixmpp: {e}"}), flush=True)
    sys.exit(3)


def emit(event, **fields):
    """One JSON line on stdout, flushed at once (the caller reads it live)."""
    print(json.dumps({"event": event, **fields}), flush=True)


def scram_mechanisms():
    """Every SCRAM mechanism slixmpp knows (with and without -PLUS)."""
    from slixmpp.util.sasl.client import MECHANISMS

    return {name for name in MECHANISMS if name.startswith("SCRAM-")}


class ChatBot(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.result = asyncio.get_event_loop().create_future()
        self.closed = asyncio.get_event_loop().create_future()
        self.mechanism = None

        self.register_plugin("xep_0199")  # the ping stanza
        mechs = self["feature_mechanisms"]
        # SCRAM only: slixmpp falls back to the next mechanism after a
        # <failure/>, and must never fall back to PLAIN here.
        mechs.use_mechs = set(args.mechanism) if args.mechanism else scram_mechanisms()
        if args.channel_binding == "none":
            # slixmpp 1.8 binds only with tls-unique, which TLS 1.3 lacks
            # (RFC 9266) and beamline (rustls) never offers; and with
            # binding data but a non-PLUS mechanism it sends the gs2 flag
            # `y`, which a server offering -PLUS must refuse (RFC 5802 §6).
            # Without binding data it sends `n` and never picks -PLUS.
            default_credentials = mechs.sasl_callback

            def credentials(required, optional):
                creds = default_credentials(required, optional)
                creds.pop("channel_binding", None)
                return creds

            mechs.sasl_callback = credentials
            mechs.use_mechs = {m for m in mechs.use_mechs if not m.endswith("-PLUS")}

        self.add_event_handler("stream_negotiated", self.on_stream_negotiated)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("auth_success", self.on_auth_success)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", self.on_failed_all_auth)
        self.add_event_handler("no_auth", self.on_failed_all_auth)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("ssl_invalid_chain", self.on_invalid_chain)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message_error)
        # Stream features as received, before slixmpp acts on them.
        self.register_handler(
            slixmpp.xmlstream.handler.Callback(
                "features spy",
                slixmpp.xmlstream.matcher.MatchXPath("{http://etherx.jabber.org/streams}features"),
                self.on_features,
            )
        )

    def fail(self, reason):
        if not self.result.done():
            emit("error", reason=reason)
            self.result.set_result(False)
        self.disconnect(wait=1.0)

    def on_features(self, features):
        xml = features.xml
        mechs = xml.find("{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms")
        names = [] if mechs is None else [m.text for m in mechs]
        emit(
            "features",
            starttls=xml.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is not None,
            mechanisms=names,
            bind=xml.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None,
        )

    def on_auth_success(self, _stanza):
        self.mechanism = self["feature_mechanisms"].mech.name
        emit("auth", mechanism=self.mechanism)
        if not self.mechanism.startswith("SCRAM-"):
            self.fail(f"authenticated with {self.mechanism}, not SCRAM")

    def on_failed_auth(self, stanza):
        emit(
            "auth_failure",
            mechanism=self["feature_mechanisms"].mech.name,
            condition=stanza["condition"],
            text=stanza["text"],
        )

    def on_failed_all_auth(self, _event=None):
        self.fail("no SASL mechanism succeeded")

    def on_stream_error(self, error):
        self.fail(f"stream error: {error['condition']} {error['text']}".strip())

    def on_connection_failed(self, error):
        self.fail(f"connection failed: {error}")

    def on_invalid_chain(self, error):
        self.fail(f"certificate not trusted: {error}")

    def on_disconnected(self, reason):
        if not self.closed.done():
            emit("closed", reason=str(reason) if reason else None)
            self.closed.set_result(True)
        if not self.result.done():
            emit("error", reason=f"disconnected: {reason}")
            self.result.set_result(False)

    def on_stream_negotiated(self, _event):
        tls = self.socket.version() if isinstance(self.socket, ssl.SSLObject) else None
        if tls is None:
            self.fail("the stream is not encrypted")

    async def on_session_start(self, _event):
        tls = self.socket.version() if isinstance(self.socket, ssl.SSLObject) else None
        self.send_presence()
        # One IQ round trip to the server: once its reply is here, the
        # presence before it has been handled too (one stream, in order).
        iq = self.make_iq_get(ito=self.boundjid.domain)
        iq.enable("ping")
        try:
            await iq.send(timeout=10)
            ping = "result"
        except IqError as e:
            ping = f"error:{e.iq['error']['condition']}"
        except IqTimeout:
            self.fail("no reply to an IQ to the server within 10 s")
            return
        emit("ready", jid=str(self.boundjid), mechanism=self.mechanism, tls=tls, ping=ping)
        if self.args.expect is None:
            # Send-first mode: say --send, then wait for one answer.
            self.send_message(mto=self.args.peer, mbody=self.args.send, mtype="chat")
            emit("sent", to=self.args.peer, body=self.args.send)

    def on_message_error(self, msg):
        self.fail(f"error reply from {msg['from']}: {msg['error']['condition']}")

    def on_message(self, msg):
        if msg["type"] == "error":
            return  # on_message_error
        if msg["type"] not in ("chat", "normal"):
            emit("stanza", kind="message", type=msg["type"], **{"from": str(msg["from"])})
            return
        emit("message", type=msg["type"], body=msg["body"], **{"from": str(msg["from"])})
        if self.result.done():
            return
        if msg["from"].bare != self.args.peer:
            self.fail(f"message from {msg['from']}, expected {self.args.peer}")
            return
        if self.args.expect is not None:
            if msg["body"] != self.args.expect:
                self.fail(f"body {msg['body']!r}, expected {self.args.expect!r}")
                return
            msg.reply(self.args.reply).send()
            emit("sent", to=str(msg["from"]), body=self.args.reply)
            if self.args.send is not None:
                self.send_message(mto=self.args.peer, mbody=self.args.send, mtype="chat")
                emit("sent", to=self.args.peer, body=self.args.send)
        emit("done")
        self.result.set_result(True)
        # A clean close: </stream:stream>, then wait for the server's.
        self.disconnect(wait=5.0)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jid", required=True, help="account, user@host")
    p.add_argument("--password", default=os.environ.get("XMPP_PASSWORD"),
                   help="password (default: $XMPP_PASSWORD)")
    p.add_argument("--server", required=True, help="HOST:PORT of the c2s (STARTTLS) listener")
    p.add_argument("--peer", required=True, help="bare JID to chat with")
    p.add_argument("--expect", help="body of the message to wait for and reply to; "
                   "without it, send --send first and wait for one answer")
    p.add_argument("--reply", help="body of the reply (with --expect)")
    p.add_argument("--send", help="body of the message sent after the reply "
                   "(or first, without --expect)")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--ca-cert", help="PEM certificate to trust (e.g. <data_dir>/tls/cert.pem)")
    trust.add_argument("--insecure", action="store_true", help="accept any certificate")
    p.add_argument("--mechanism", action="append",
                   help="allowed SASL mechanism (repeatable; must be SCRAM-*; default: all SCRAM)")
    p.add_argument("--channel-binding", choices=["none", "slixmpp"], default="none",
                   help="none (default): no TLS channel binding, gs2 flag n, no -PLUS; "
                        "slixmpp: slixmpp's own choice (-PLUS with tls-unique first, "
                        "else flag y)")
    p.add_argument("--timeout", type=float, default=30.0, help="overall limit in seconds")
    p.add_argument("--debug", action="store_true", help="log slixmpp's XML traffic on stderr")
    args = p.parse_args()
    if args.expect is not None and args.reply is None:
        p.error("--expect needs --reply")
    if args.expect is None and args.send is None:
        p.error("give --expect and --reply, or --send")
    if args.password is None:
        p.error("--password or $XMPP_PASSWORD is required")
    for m in args.mechanism or []:
        if not m.startswith("SCRAM-"):
            p.error(f"--mechanism {m}: only SCRAM-* mechanisms are allowed")
    host, _, port = args.server.rpartition(":")
    args.address = (host.strip("[]"), int(port))
    return args


async def run(args):
    bot = ChatBot(args)
    ctx = ssl.create_default_context()
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=args.ca_cert)
    bot.ssl_context = ctx
    # slixmpp's get_ssl_context() otherwise adds the system trust store.
    bot.ca_certs = args.ca_cert
    bot.connect(address=args.address, force_starttls=True)
    try:
        ok = await asyncio.wait_for(asyncio.shield(bot.result), args.timeout)
    except asyncio.TimeoutError:
        emit("error", reason=f"timed out after {args.timeout} s")
        if not bot.result.done():
            bot.result.set_result(False)
        bot.abort()
        return 2
    if ok:
        # Let the close finish (the server's </stream:stream>), bounded.
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
    # slixmpp leaves tasks behind (its send filters): end them quietly.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
