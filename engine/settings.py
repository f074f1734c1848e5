"""Settings from the environment (12-factor): one object, read once, passed everywhere.

The one file read besides: when ``CRM_ENCRYPTION_KEYS`` is not set, the development key that
`crm up` keeps in ``$CRM_VAR_DIR/dev_encryption_key``, so every command finds the same key."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_LAYER = Path(__file__).resolve().parent / "metadata" / "system"
#: The variable holding the keys of encrypted fields (engine/storage/crypto.py reads them from Settings).
KEYS_ENV = "CRM_ENCRYPTION_KEYS"
#: The development key that `crm up` makes when the environment has no keys, under CRM_VAR_DIR.
DEV_KEY_FILE = "dev_encryption_key"


def dev_key_file(var_dir: Path) -> Path:
    """Where `crm up` keeps the development key of ``var_dir`` (mode 0600)."""
    return Path(var_dir) / DEV_KEY_FILE


def _encryption_keys(env, var_dir: Path) -> tuple[str, str]:
    """(keys, where they come from): the environment wins; else the development key file, if any."""
    if env.get(KEYS_ENV, "").strip():
        return env[KEYS_ENV].strip(), KEYS_ENV
    path = dev_key_file(var_dir)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), str(path)
    return "", ""


def _project_path(value: str | None, default: str) -> Path:
    path = Path(value or default)
    if path.is_absolute() or value:
        return path
    return (Path.cwd() / path) if (Path.cwd() / path).exists() else ROOT / path


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/crm.db"
    redis_url: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    config_root: Path = ROOT / "configs" / "industries"
    industry: str = "base"
    site_dir: Path | None = None
    plugin_dirs: tuple[Path, ...] = (ROOT / "plugins",)
    backup_dir: Path = ROOT / "var" / "backups"
    var_dir: Path = ROOT / "var"
    entry_point_plugins: bool = True
    #: CRM_DISABLED_PLUGINS: names of plugins (default ones too, e.g. ``dashboards``) not to run.
    disabled_plugins: tuple[str, ...] = ()
    #: Automations (docs/automation.md): the rq queue, retry backoff, job lease, chain depth, mail.
    queue_name: str = "crm"
    job_backoff: float = 10.0
    job_lease: float = 300.0
    automation_depth: int = 5
    mail_url: str = ""
    mail_from: str = "crm@localhost"
    secure_cookies: bool = False   # CRM_SECURE_COOKIES: the session cookie only over https
    require_if_match: bool = False   # CRM_REQUIRE_IF_MATCH: API writes to a record need If-Match (else 428)
    #: Keys of encrypted fields and where they were found (CRM_ENCRYPTION_KEYS, or the development key
    #: file under var_dir). Empty: the environment is read when a key is needed (docs/security.md).
    encryption_keys: str = field(default="", repr=False)
    encryption_keys_from: str = ""
    #: CRM_CURRENCY: the ISO code of amounts whose entity names no currency (docs/metadata.md#currency).
    currency: str = "USD"
    #: CRM_COMPANY_NAME, CRM_COMPANY_ADDRESS: the company documents (a quote's PDF) are issued by.
    company_name: str = "Your company"
    company_address: str = ""
    #: CRM_PDF_FONT: the TrueType/OpenType font (.ttf, .otf, .ttc) with CJK glyphs that PDFs embed;
    #: blank: the first one found on the font search path (docs/operations.md#fonts-for-pdf-documents).
    pdf_font: str = ""
    #: Files (engine/files, docs/operations.md#file-storage): CRM_FILES_STORE (local or s3), CRM_FILES_DIR
    #: (local; default $CRM_VAR_DIR/files), CRM_FILES_MAX_SIZE (bytes, the attachments' limit),
    #: CRM_FILES_TYPES (extensions attachments may have, comma-separated; blank: the built-in list),
    #: CRM_S3_BUCKET, CRM_S3_ENDPOINT_URL, CRM_S3_REGION, CRM_S3_PREFIX (credentials: boto3's own variables).
    files_store: str = "local"
    files_dir: Path | None = None
    files_max_size: int = 25 * 1024 * 1024
    files_types: tuple[str, ...] = ()
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_prefix: str = ""

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        values = dict(
            database_url=env.get("DATABASE_URL") or f"sqlite:///{_project_path(None, 'var') / 'crm.db'}",
            redis_url=env.get("REDIS_URL") or None,
            config_root=_project_path(env.get("CRM_CONFIG_ROOT"), "configs/industries"),
            industry=env.get("CRM_INDUSTRY", "base"),
            site_dir=Path(env["CRM_SITE_DIR"]) if env.get("CRM_SITE_DIR") else None,
            plugin_dirs=tuple(Path(p) for p in env["CRM_PLUGIN_DIRS"].split(os.pathsep) if p)
            if "CRM_PLUGIN_DIRS" in env else (_project_path(None, "plugins"),),
            backup_dir=_project_path(env.get("CRM_BACKUP_DIR"), "var/backups"),
            var_dir=_project_path(env.get("CRM_VAR_DIR"), "var"),
            disabled_plugins=tuple(n.strip() for n in env.get("CRM_DISABLED_PLUGINS", "").split(",") if n.strip()),
            queue_name=env.get("CRM_QUEUE", "crm"),
            job_backoff=float(env.get("CRM_JOB_BACKOFF", 10.0)),
            job_lease=float(env.get("CRM_JOB_LEASE", 300.0)),
            automation_depth=int(env.get("CRM_AUTOMATION_DEPTH", 5)),
            mail_url=env.get("CRM_MAIL_URL", ""),
            mail_from=env.get("CRM_MAIL_FROM", "crm@localhost"),
            secure_cookies=env.get("CRM_SECURE_COOKIES", "").lower() in ("1", "true", "yes"),
            require_if_match=env.get("CRM_REQUIRE_IF_MATCH", "").lower() in ("1", "true", "yes"),
            currency=(env.get("CRM_CURRENCY") or "USD").strip().upper(),
            company_name=env.get("CRM_COMPANY_NAME") or "Your company",
            company_address=env.get("CRM_COMPANY_ADDRESS", ""),
            pdf_font=env.get("CRM_PDF_FONT", ""),
            files_store=env.get("CRM_FILES_STORE", "local").strip().lower() or "local",
            files_dir=Path(env["CRM_FILES_DIR"]) if env.get("CRM_FILES_DIR") else None,
            files_max_size=int(env.get("CRM_FILES_MAX_SIZE") or 25 * 1024 * 1024),
            files_types=tuple(t.strip().lower().lstrip(".") for t in env.get("CRM_FILES_TYPES", "").split(",")
                              if t.strip()),
            s3_bucket=env.get("CRM_S3_BUCKET", ""),
            s3_endpoint_url=env.get("CRM_S3_ENDPOINT_URL", ""),
            s3_region=env.get("CRM_S3_REGION", ""),
            s3_prefix=env.get("CRM_S3_PREFIX", ""),
        )
        if env.get("SECRET_KEY"):
            values["secret_key"] = env["SECRET_KEY"]
        values.update(overrides)
        if "encryption_keys" not in overrides:
            values["encryption_keys"], values["encryption_keys_from"] = _encryption_keys(env, Path(values["var_dir"]))
        return cls(**values)

    @property
    def mail_target(self) -> str:
        """Where e-mail goes: ``CRM_MAIL_URL``, or by default files in ``var/outbox``."""
        return self.mail_url or (Path(self.var_dir) / "outbox").resolve().as_uri()

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def layers(self, plugin_layers: list[tuple[str, Path]] = ()) -> list[tuple[str, Path]]:
        """Metadata layers, lowest first: system, base, industry, plugins, site."""
        layers = [("system", SYSTEM_LAYER), ("base", self.config_root / "base")]
        if self.industry and self.industry != "base":
            layers.append((f"industry:{self.industry}", self.config_root / self.industry))
        layers.extend(plugin_layers)
        if self.site_dir:
            layers.append(("site", self.site_dir))
        return layers
