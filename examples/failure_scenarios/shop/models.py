from django.db import models


class Order(models.Model):
    number = models.IntegerField()
    status = models.CharField(max_length=20, default="new")

    def __str__(self) -> str:
        return f"order {self.number} ({self.status})"
