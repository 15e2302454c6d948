"""The models the docs' examples use: a small bookshop."""

from django.db import models


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=6, decimal_places=2, default=10)
    in_stock = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.title


class Sale(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE)
    quantity = models.IntegerField(default=1)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.book}"
