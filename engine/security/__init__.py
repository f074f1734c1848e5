"""Identity and permissions. For now: password hashing and credentials of users."""
