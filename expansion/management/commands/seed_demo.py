from django.core.management.base import BaseCommand
from django.utils import timezone

from expansion.demo import DEMO_EMAIL, DEMO_PASSWORD, build_demo


class Command(BaseCommand):
    help = "Create a demo workspace (plans, ~200 customers, usage history, opportunities) through the services."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--customers", type=int, default=200)

    def handle(self, *args: object, **options: object) -> None:
        customers = int(options["customers"])  # type: ignore[call-overload]
        self.stdout.write(f"Seeding demo workspace with {customers} customers…")
        result = build_demo(now=timezone.now(), customers=customers)
        if result is None:
            self.stdout.write(self.style.WARNING(f"Demo workspace already exists; log in as {DEMO_EMAIL}."))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready: {result.customers} customers, {result.events} events.\n"
                f"  Log in: {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
                f"  Write key: {result.write_key}"
            )
        )
