"""Operations: what the ops API and the dashboard do to the store (search, replay, pause,
alerts, retention). HTTP lives in ``m3bng.api.ops``; the logic lives here. The ``m3bng ops``
command is a client of that API and lives with the other commands (``m3bng.cli.ops``)."""
