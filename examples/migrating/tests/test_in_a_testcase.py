"""Testing threaded code with Django's TestCase: share_connections().

The pool's workers use the test's connection, so they see the rows the test made in
its (uncommitted) transaction, and what they write is rolled back with the test: no
TransactionTestCase, no table flush after every test.
"""

from __future__ import annotations

from digest.models import Subscriber
from digest.modern import send_digests
from django.test import TestCase

from django_thread.testing import share_connections


@share_connections()
class SendDigestsTests(TestCase):
    def test_every_subscriber_gets_one_digest(self) -> None:
        ids = [Subscriber.objects.create(email=f"s{i}@example.com").pk for i in range(20)]

        sent = send_digests(ids)  # runs on a pool of 4 django_thread workers

        self.assertEqual(sent, [1] * 20)
        self.assertEqual(Subscriber.objects.filter(digests_sent=1).count(), 20)

    def test_the_workers_queries_are_counted(self) -> None:
        ids = [Subscriber.objects.create(email=f"q{i}@example.com").pk for i in range(3)]

        with self.assertNumQueries(6):  # an UPDATE and a SELECT per subscriber
            send_digests(ids)
