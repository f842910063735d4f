"""Async CertificateCredential."""

from __future__ import annotations

from .._certificate import CertificateFlow
from .._http import AsyncRequestHook
from ._base import AsyncHttpCredential


class CertificateCredential(AsyncHttpCredential):
    """Authenticates a service principal with a certificate (see the sync class)."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        certificate_path: str | None = None,
        *,
        certificate_data: bytes | None = None,
        password: str | bytes | None = None,
        authority: str | None = None,
        send_certificate_chain: bool = False,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: AsyncRequestHook | None = None,
    ) -> None:
        flow = CertificateFlow(
            tenant_id,
            client_id,
            certificate_path,
            certificate_data,
            password,
            authority,
            send_certificate_chain,
            additionally_allowed_tenants,
        )
        super().__init__(flow, request_hook=request_hook)
