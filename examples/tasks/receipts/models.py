from django.db import models


class Receipt(models.Model):
    """One row per task run: which order, written under which TASKS variant."""

    order = models.IntegerField()
    variant = models.CharField(max_length=20)

    def __str__(self) -> str:
        return f"receipt for order {self.order} ({self.variant})"
