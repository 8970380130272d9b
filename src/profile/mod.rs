//! hw-profiles: TOML files in profiles/, validation, rendering a Portage config root from templates/.
