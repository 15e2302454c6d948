from django.db import models


class Entry(models.Model):
    account = models.CharField(max_length=40)
    amount = models.IntegerField()

    class Meta:
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return f"{self.account}: {self.amount}"
