"""Why a camera stream cannot be read, in one line of our own: connection refused, no answer, 401, 404, ...

OpenCV's FFmpeg capture says only "not opened"; the reason sits in FFmpeg's raw log lines, which the
daemon silences. So when an open fails we ask the server ourselves, as cheaply as it can be asked:
a TCP connect (refused, no answer, no route, unknown host), then for RTSP one DESCRIBE (answering
a 401 with the URL's credentials, Basic or Digest as the camera asks, as FFmpeg would), for HTTP
one GET whose body is not read. While a camera is down only the TCP connect runs, so waiting for it
to come back costs a SYN per attempt, not an RTSP session.

401, 403 and 404 are configuration errors (wrong password, wrong path): retrying fast cannot fix them.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
# Problem codes (the `problem` field of edge.source/1); the config errors are retried slowly.
CONFIG_ERRORS = frozenset({"unauthorized", "forbidden", "not_found"})
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
_STATUS_HINTS = {401: "the user name or password in the URL is wrong or missing",
                 403: "this user may not view the stream",
                 404: "the camera has no stream at this path"}
_CHALLENGE = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class StreamProblem:
    code: str        # refused, timeout, unreachable, unauthorized, forbidden, not_found, server_error,
                     # unreadable, stalled, ended
    reason: str      # one line for a person

    @property
    def config_error(self) -> bool:
        return self.code in CONFIG_ERRORS


def target(url: str) -> tuple[str, int]:
    """(host, port) the URL points at, with the scheme's default port."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 554)


def reach(url: str, timeout: float) -> StreamProblem | None:
    """None if a TCP connection to the URL's host and port opens within `timeout`, else why not."""
    host, port = target(url)
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return StreamProblem("refused", f"connection refused by {where} (nothing listens there)")
    except socket.gaierror:
        return StreamProblem("unreachable", f"unknown host {host}")
    except (socket.timeout, TimeoutError):
        return StreamProblem("timeout", f"no answer from {where} within {timeout:g} s")
    except OSError as err:
        return StreamProblem("unreachable", f"cannot reach {where}: {os.strerror(err.errno) if err.errno else err}")


def diagnose(url: str, timeout: float) -> StreamProblem:
    """Why an open failed: the network, the server's answer, or (if both are fine) the stream itself."""
    problem = reach(url, timeout)
    if problem is None:
        ask = _describe_rtsp if urlsplit(url).scheme.lower().startswith("rtsp") else _get_http
        try:
            problem = ask(url, timeout)
        except (socket.timeout, TimeoutError):
            problem = StreamProblem("timeout", f"{target(url)[0]} accepted the connection but did not answer "
                                               f"within {timeout:g} s")
        except (OSError, ValueError) as err:
            problem = StreamProblem("server_error", f"the server's answer cannot be read ({err})")
    return problem or StreamProblem("unreadable", "the server answers but the stream cannot be decoded "
                                                  "(a codec or format this OpenCV's FFmpeg cannot read)")


def _status_problem(status: int, phrase: str, had_credentials: bool) -> StreamProblem | None:
    if 200 <= status < 300:
        return None
    code = _STATUS_CODES.get(status, "server_error")
    hint = _STATUS_HINTS.get(status, "the server refused the stream")
    if status == 401 and not had_credentials:
        hint = "the camera wants a user name and password (none in the URL)"
    return StreamProblem(code, f"{status} {phrase.strip() or 'error'}: {hint}")


# --- RTSP: one DESCRIBE, answered with credentials if the camera asks ------------------------------------

def _describe_rtsp(url: str, timeout: float) -> StreamProblem | None:
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    plain = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    raw = socket.create_connection(target(url), timeout=timeout)
    if parts.scheme.lower() == "rtsps":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE   # cameras' certificates are self-signed
        raw = context.wrap_socket(raw, server_hostname=parts.hostname)
    with raw, raw.makefile("rb") as answers:
        status, phrase, headers = _request(raw, answers, plain, 1, None)
        if status == 401 and user:
            authorization = _authorization(headers, user, password, plain)
            if authorization:
                status, phrase, headers = _request(raw, answers, plain, 2, authorization)
        return _status_problem(status, phrase, bool(user))


def _request(sock: socket.socket, answers, url: str, cseq: int,
             authorization: str | None) -> tuple[int, str, list[tuple[str, str]]]:
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: edge"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line = answers.readline(1024).decode("latin-1")
    match = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", status_line)
    if not match:
        raise ValueError(f"not an RTSP answer: {status_line.strip()[:60]!r}")
    headers = []
    while (line := answers.readline(4096).decode("latin-1").strip()):
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    length = int(next((v for n, v in headers if n == "content-length"), "0") or 0)
    answers.read(min(length, 1 << 16))       # the SDP, if any: read past it for the next request
    return int(match.group(1)), match.group(2), headers


def _authorization(headers: list[tuple[str, str]], user: str, password: str, url: str) -> str | None:
    """The Authorization header for the camera's challenge: Digest (RFC 2617) if offered, else Basic."""
    challenges = [value for name, value in headers if name == "www-authenticate"]
    digest = next((c for c in challenges if c.lower().startswith("digest")), None)
    if digest is None:
        if any(c.lower().startswith("basic") for c in challenges):
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return None
    fields = {key.lower(): quoted or bare for key, quoted, bare in _CHALLENGE.findall(digest[6:])}
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()   # noqa: S324 - the protocol's hash, not ours to choose

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"DESCRIBE:{url}")
    header = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{url}"'
    if "auth" in fields.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        header += f', qop=auth, nc=00000001, cnonce="{cnonce}", ' \
                  f'response="{md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")}"'
    else:
        header += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}"'
    if fields.get("opaque"):
        header += f', opaque="{fields["opaque"]}"'
    return header


# --- HTTP(S): one GET, the body left unread -----------------------------------------------------------

def _get_http(url: str, timeout: float) -> StreamProblem | None:
    parts = urlsplit(url)
    plain = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    handlers: list[urllib.request.BaseHandler] = []
    if parts.username:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, plain, unquote(parts.username), unquote(parts.password or ""))
        handlers += [urllib.request.HTTPBasicAuthHandler(passwords), urllib.request.HTTPDigestAuthHandler(passwords)]
    if parts.scheme.lower() == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(plain, headers={"User-Agent": "edge"}), timeout=timeout) as answer:
            return _status_problem(answer.status, answer.reason, bool(parts.username))
    except urllib.error.HTTPError as err:
        return _status_problem(err.code, str(err.reason), bool(parts.username))
    except urllib.error.URLError as err:
        if isinstance(err.reason, (socket.timeout, TimeoutError)):
            raise err.reason from None
        raise OSError(str(err.reason)) from None
