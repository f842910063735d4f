"""Async CertificateCredential."""

from __future__ import annotations

from .._certificate import CertificateArguments
from .._http import AsyncRequestHook
from ._base import AsyncHttpCredential


class CertificateCredential(CertificateArguments[AsyncRequestHook], AsyncHttpCredential):
    """Authenticates a service principal with a certificate (see the sync class)."""
