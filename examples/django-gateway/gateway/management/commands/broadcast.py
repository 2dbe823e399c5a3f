"""`python manage.py broadcast GROUP TEXT`: what any Django code does to reach
browsers: `async_to_sync(channel_layer.group_send)(...)`. Every browser in
GROUP, on every channels-server sharing the Redis, gets it once.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "group_send a demo.message to a group"

    def add_arguments(self, parser):
        parser.add_argument("group")
        parser.add_argument("text")

    def handle(self, *args, group, text, **options):
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(group, {"type": "demo.message", "text": text})
        self.stdout.write(f"sent to {group}")
