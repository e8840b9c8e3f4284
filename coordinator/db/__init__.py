"""Database: SQLAlchemy models, the async session factory and Alembic migrations."""
