"""The app's work, the same in every variant: nothing here knows about threads."""

from django.db.models import F

from digest.models import Subscriber


def send_digest(subscriber_id: int) -> int:
    """Pretend to email one subscriber their digest; return how many they have had."""
    Subscriber.objects.filter(pk=subscriber_id).update(digests_sent=F("digests_sent") + 1)
    return Subscriber.objects.get(pk=subscriber_id).digests_sent


def process_pending() -> int:
    """One pass of a background poller: handle whatever is pending."""
    return Subscriber.objects.filter(pending=True).update(pending=False)
