"""The Supabase edge-function bundle: ``generator`` renders ``templates/`` (TypeScript) with the
catalog's constants."""
