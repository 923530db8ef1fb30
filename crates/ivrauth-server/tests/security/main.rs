//! Security properties of the server through its real HTTP face, one module per area, each
//! test named after the property it proves.

mod voicexml;
