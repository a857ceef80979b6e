"""Who is who: workspaces (tenants), founders, API keys, customers and contacts."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models

from accounts.tenancy import TenantModel


class UserManager(BaseUserManager["User"]):
    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        return self.create_user(email, password, is_staff=True, is_superuser=True, **extra)


class User(AbstractUser):
    """A founder who logs in with email and password."""

    username = None  # type: ignore[assignment]
    email = models.EmailField(unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]


class Workspace(models.Model):
    """A tenant: one founder's business."""

    name = models.CharField(max_length=120)
    currency = models.CharField(max_length=3, default="usd")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A founder's seat in a workspace."""

    # Not tenant-scoped: it is read to find which workspace a logged-in founder may act in.
    tenancy_exempt_reason = "establishes the scope"

    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace}"


class ApiKey(TenantModel):
    """A workspace credential. Only a hash of the secret part is stored; the full key is shown once."""

    class Kind(models.TextChoices):
        WRITE = "write", "Write key (product code)"
        SECRET = "secret", "Secret key (management API)"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=80, blank=True)
    # Public, unique lookup id embedded in the key ("upl_wk_<key_id>_<secret>").
    key_id = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "kind"])]

    @property
    def display_prefix(self) -> str:
        return f"upl_{'wk' if self.kind == self.Kind.WRITE else 'sk'}_{self.key_id}_…"


class Customer(TenantModel):
    """A company that pays the workspace (Segment's `groupId`)."""

    # No other index starting with the workspace: the (workspace, external id) unique index serves
    # every workspace-wide read, and with no statistics (a new database) the planner rates any
    # other such index as good as the unique one for a single-id look-up, then walks the workspace
    # with it (tests/test_prepared_sql.py). Contact is kept alike.
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False)
    external_id = models.CharField(max_length=255)  # COLLATE "C" on PostgreSQL: migration 0005
    name = models.CharField(max_length=255, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    # Normalized monthly recurring revenue in cents, maintained by billing's movement ledger.
    mrr_cents = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "external_id"], name="customer_external_id_unique")]

    def __str__(self) -> str:
        return self.name or self.external_id


class Contact(TenantModel):
    """A person at a customer (Segment's `userId`)."""

    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False
    )  # indexed by the (workspace, external id) unique index; see Customer.workspace
    external_id = models.CharField(max_length=255)  # COLLATE "C" on PostgreSQL: migration 0005
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts")
    email = models.EmailField(blank=True)
    name = models.CharField(max_length=255, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "external_id"], name="contact_external_id_unique")]

    def __str__(self) -> str:
        return self.name or self.email or self.external_id

    @property
    def first_name(self) -> str:
        return (self.name or "there").split(" ")[0]


class AuditEntry(TenantModel):
    """Who changed what in a workspace: keys, rules, offers, templates, Stripe settings. Append-only."""

    # Kept when the founder's account is deleted: the trail must outlive the actor.
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # "founder@x.example", "api key upl_sk_abc…", "system": readable even after the actor is gone.
    actor_label = models.CharField(max_length=255)
    action = models.CharField(max_length=64)  # "<object>.<verb>", e.g. "api_key.created"
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "-created_at"]),
            models.Index(fields=["workspace", "target_type", "target_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_id}"
