"""The database adapter: models, engine, sessions and queries. Only here is sqlalchemy used."""
