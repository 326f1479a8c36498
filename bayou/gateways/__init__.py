"""The doors: Kafka, HTTP, MQTT and AMQP listeners, each a thin asyncio server over its
sans-I/O codec and the core (``bayou.core``); ``door.py`` is the interface ``bayou.app`` runs."""
