from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from expansion import rollup


class Command(BaseCommand):
    help = "Recompute the dashboard's ledger rollup from the raw MRR movements (repair; the triggers keep it current)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--workspace", type=int, action="append", help="workspace id (repeatable); default: all")

    def handle(self, *args: object, **options: object) -> None:
        if not rollup.maintained():
            raise CommandError("The ledger rollup is kept on PostgreSQL only; this database rolls up on read.")
        chosen = options["workspace"] or list(Workspace.objects.order_by("pk").values_list("pk", flat=True))
        for workspace_id in chosen:  # type: ignore[attr-defined]
            rollup.rebuild(int(workspace_id))
        self.stdout.write(self.style.SUCCESS(f"Rebuilt the ledger rollup of {len(chosen)} workspace(s)."))  # type: ignore[arg-type]
