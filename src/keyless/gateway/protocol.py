"""LDAPv3 messages on the wire, with a real ASN.1/BER codec (pyasn1 and ldap3's RFC 4511
definitions): decoding requests into small typed values, encoding results.

The gateway understands BindRequest, UnbindRequest and AbandonRequest. Any other request is
decoded far enough to answer it with its own response type and a result code; anything that
is not an LDAPv3 request at all is a protocol error, answered with a Notice of Disconnection
(RFC 4511 4.4.1) before the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ldap3.protocol import rfc4511
from ldap3.strategy.base import BaseStrategy
from pyasn1.codec.ber import decoder, encoder

from keyless.base.errors import KeylessError

# An LDAPMessage is a universal, constructed SEQUENCE: its first octet is always 0x30.
LDAP_MESSAGE_TAG = 0x30
_MAX_HEADER = 2 + 127
# RFC 4511 4.1.1: messageID 0 is reserved for unsolicited notifications from the server.
MAX_MESSAGE_ID = 2**31 - 1
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
START_TLS = "1.3.6.1.4.1.1466.20037"

# Result codes (RFC 4511 appendix A) the gateway answers with.
SUCCESS = 0
OPERATIONS_ERROR = 1
PROTOCOL_ERROR = 2
AUTH_METHOD_NOT_SUPPORTED = 7
UNAVAILABLE_CRITICAL_EXTENSION = 12
INVALID_DN_SYNTAX = 34
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
BUSY = 51
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53

# The response each request type is answered with; response types sent by a client, and
# anything not listed, are protocol errors.
RESPONSE_OF = {
    "bindRequest": "bindResponse",
    "searchRequest": "searchResDone",
    "modifyRequest": "modifyResponse",
    "addRequest": "addResponse",
    "delRequest": "delResponse",
    "modDNRequest": "modDNResponse",
    "compareRequest": "compareResponse",
    "extendedReq": "extendedResp",
}
_RESPONSE_TYPES = {
    "bindResponse": rfc4511.BindResponse,
    "searchResDone": rfc4511.SearchResultDone,
    "modifyResponse": rfc4511.ModifyResponse,
    "addResponse": rfc4511.AddResponse,
    "delResponse": rfc4511.DelResponse,
    "modDNResponse": rfc4511.ModifyDNResponse,
    "compareResponse": rfc4511.CompareResponse,
    "extendedResp": rfc4511.ExtendedResponse,
}


class ProtocolError(KeylessError):
    """The bytes are not an LDAPv3 request; the session must end (with a notice)."""


class MessageTooLarge(ProtocolError):
    """The message is larger than the gateway accepts."""


@dataclass(frozen=True)
class BindRequest:
    message_id: int
    version: int
    name: str | None  # None: not UTF-8
    method: str  # "simple", "sasl", or another AuthenticationChoice alternative
    password: bytes = field(repr=False)  # the token: simple binds only, b"" otherwise
    critical_controls: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnbindRequest:
    message_id: int


@dataclass(frozen=True)
class AbandonRequest:
    message_id: int


@dataclass(frozen=True)
class OtherRequest:
    """A request the gateway does not perform; `response` is the op it is answered with."""

    message_id: int
    operation: str
    response: str
    request_name: str = ""  # the OID of an extended request
    critical_controls: tuple[str, ...] = ()


Request = BindRequest | UnbindRequest | AbandonRequest | OtherRequest


def frame_size(buffer: bytes | bytearray) -> int | None:
    """The size of the message at the start of `buffer` from its BER length (definite form,
    the only one LDAP allows; ldap3's own framing), or None while too few bytes have arrived
    to tell. Raises ProtocolError when the bytes cannot start an LDAPMessage."""
    if buffer and buffer[0] != LDAP_MESSAGE_TAG:
        raise ProtocolError("the bytes do not start an LDAPMessage (a BER SEQUENCE)")
    # The length is in the first 2 + 127 bytes at most.
    size = int(BaseStrategy.compute_ldap_message_size(bytes(buffer[:_MAX_HEADER])))
    return None if size < 0 else size


def decode_request(frame: bytes) -> Request:
    """One complete LDAPMessage (exactly `frame_size` bytes) as a request."""
    try:
        message, rest = decoder.decode(frame, asn1Spec=rfc4511.LDAPMessage())
        if rest:
            raise ProtocolError("trailing bytes after the LDAP message")
        return _request(message)
    except ProtocolError:
        raise
    except Exception as exc:  # pyasn1 raises many types on hostile input; all are garbage
        raise ProtocolError(f"not an LDAPv3 message ({type(exc).__name__})") from None


def _request(message: rfc4511.LDAPMessage) -> Request:
    message_id = int(message["messageID"])
    if not 0 < message_id <= MAX_MESSAGE_ID:
        raise ProtocolError("a request's messageID must be between 1 and 2^31-1")
    op = message["protocolOp"]
    name = str(op.getName())
    critical = _critical_controls(message)
    if name == "bindRequest":
        request = op.getComponent()
        auth = request["authentication"]
        method = str(auth.getName())
        raw_name = bytes(request["name"])
        try:
            dn: str | None = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            dn = None
        return BindRequest(
            message_id=message_id,
            version=int(request["version"]),
            name=dn,
            method=method,
            password=bytes(auth.getComponent()) if method == "simple" else b"",
            critical_controls=critical,
        )
    if name == "unbindRequest":
        return UnbindRequest(message_id)
    if name == "abandonRequest":
        return AbandonRequest(message_id)
    response = RESPONSE_OF.get(name)
    if response is None:
        raise ProtocolError(f"{name} is not a request a client may send")
    request_name = ""
    if name == "extendedReq":
        request_name = bytes(op.getComponent()["requestName"]).decode("utf-8", "replace")[:200]
    return OtherRequest(message_id, name, response, request_name, critical)


def _critical_controls(message: rfc4511.LDAPMessage) -> tuple[str, ...]:
    controls = message["controls"]
    if not controls.hasValue():
        return ()
    return tuple(
        str(control["controlType"])[:200] for control in controls if bool(control["criticality"])
    )


def encode_result(
    message_id: int, response: str, code: int, diagnostic: str, response_name: str | None = None
) -> bytes:
    """An LDAPResult-shaped response (`bindResponse`, `searchResDone`, `extendedResp`...)."""
    result = _RESPONSE_TYPES[response]()
    result["resultCode"] = rfc4511.ResultCode(code)
    result["matchedDN"] = rfc4511.LDAPDN("")
    result["diagnosticMessage"] = rfc4511.LDAPString(diagnostic[:1000])
    if response_name is not None:
        result["responseName"] = rfc4511.ResponseName(response_name)
    op = rfc4511.ProtocolOp()
    op.setComponentByName(response, result)
    message = rfc4511.LDAPMessage()
    message["messageID"] = rfc4511.MessageID(message_id)
    message["protocolOp"] = op
    return bytes(encoder.encode(message))


def notice_of_disconnection(code: int, diagnostic: str) -> bytes:
    """The unsolicited notification a server sends before it closes a session (messageID 0)."""
    return encode_result(0, "extendedResp", code, diagnostic, NOTICE_OF_DISCONNECTION)
