from django.db import models


class Subscriber(models.Model):
    email = models.EmailField(unique=True)
    digests_sent = models.IntegerField(default=0)
    pending = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.email
