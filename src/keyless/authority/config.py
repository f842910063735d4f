"""The data directory's layout and the server configuration kept in it (`config.json`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from keyless.store.location import default_store_url

DEFAULT_PORT = 8443
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PUBLIC_HOST = "localhost"
DEFAULT_GATEWAY_PORT = 8389


def default_data_dir() -> Path:
    return Path(os.environ.get("KEYLESS_DATA_DIR") or Path.home() / ".keyless").expanduser()


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def master_key(self) -> Path:
        return self.root / "master.key"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def login_socket(self) -> Path:
        return self.root / "login.sock"

    @property
    def server_state(self) -> Path:
        """Written by a running `serve`: where it listens, so the CLI needs no flags."""
        return self.root / "server.json"

    @property
    def cli_dir(self) -> Path:
        return self.root / "cli"


@dataclass
class ServerConfig:
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    public_host: str = DEFAULT_PUBLIC_HOST
    tls_names: list[str] = field(default_factory=list)
    store_url: str | None = None
    # The token gateway that `keyless serve` embeds (PostgreSQL's pg_hba.conf names this port,
    # so it is fixed at init rather than picked at each start); 0 turns the gateway off.
    gateway_port: int = DEFAULT_GATEWAY_PORT

    @classmethod
    def load_or_default(cls, paths: DataDir) -> ServerConfig:
        if not paths.config.exists():
            return cls()
        raw = json.loads(paths.config.read_text())
        return cls(
            port=int(raw.get("port", DEFAULT_PORT)),
            host=str(raw.get("host", DEFAULT_HOST)),
            public_host=str(raw.get("publicHost", DEFAULT_PUBLIC_HOST)),
            tls_names=[str(n) for n in raw.get("tlsNames", [])],
            store_url=raw.get("storeUrl"),
            gateway_port=int(raw.get("gatewayPort", DEFAULT_GATEWAY_PORT)),
        )

    def save(self, paths: DataDir) -> None:
        data = asdict(self)
        from sqlalchemy.engine import make_url

        store_url = self.store_url
        if store_url and make_url(store_url).password is not None:
            # A password never goes to disk in clear: such a URL is given at each start instead.
            store_url = None
        raw = {
            "port": data["port"],
            "host": data["host"],
            "publicHost": data["public_host"],
            "tlsNames": data["tls_names"],
            "storeUrl": store_url,
            "gatewayPort": data["gateway_port"],
        }
        tmp = paths.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(paths.config)

    def effective_store_url(self, paths: DataDir) -> str:
        return (
            os.environ.get("KEYLESS_STORE_URL") or self.store_url or default_store_url(paths.root)
        )

    def endpoint(self, port: int | None = None) -> str:
        return f"https://{self.public_host}:{port or self.port}"
