"""The tasks: the same module whichever backend TASKS names."""

from django.tasks import task

from receipts.models import Receipt


@task
def write_receipt(order: int, variant: str) -> int:
    return Receipt.objects.create(order=order, variant=variant).pk


# No priority: RQBackend does not support one (InvalidTask), unlike the other two.
@task(queue_name="urgent")
def write_urgent_receipt(order: int, variant: str) -> int:
    return Receipt.objects.create(order=order, variant=variant).pk
