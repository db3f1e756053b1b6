//! The user-data side: the ucernvm block, placeholders, value checks, atomic rewrites.
