"""The bookshop's background tasks, for docs/howto/tasks.md (Django 6.0+)."""

from django.tasks import TaskContext, task

from cookbook.models import Book, Sale


@task
def send_receipt(sale_id: int) -> str:
    sale = Sale.objects.select_related("book").get(pk=sale_id)
    return f"receipt: {sale.quantity} x {sale.book.title}"


@task(priority=50, queue_name="urgent")
def restock(book_id: int) -> int:
    return Book.objects.filter(pk=book_id, in_stock=False).update(in_stock=True)


@task(takes_context=True)
def audit(context: TaskContext, title: str) -> dict[str, object]:
    return {"title": title, "attempt": context.attempt, "result_id": context.task_result.id}


@task
def reprice(book_id: int, price: str) -> None:
    book = Book.objects.get(pk=book_id)
    if float(price) <= 0:
        msg = f"price must be positive, not {price}"
        raise ValueError(msg)
    book.price = price
    book.save(update_fields=["price"])
