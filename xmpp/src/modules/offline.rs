//! `mod_offline`: Offline message storage and delivery (XEP-0160).
//!
//! Not built yet: the module starts and does nothing.

use std::sync::Arc;

use beamline_supervision::ChildSpec;
use beamline_supervision::module::{Module, ModuleContext, ModuleOptions};

use super::{Services, holder_tree};

/// The `mod_offline` module.
pub struct Mod {
    #[allow(dead_code)] // used once the module is built
    services: Services,
}

/// The module, for the module manager.
pub fn module(services: &Services) -> Arc<dyn Module> {
    Arc::new(Mod {
        services: services.clone(),
    })
}

impl Module for Mod {
    fn name(&self) -> &str {
        "mod_offline"
    }

    fn start(&self, ctx: &ModuleContext, _opts: &ModuleOptions) -> Result<ChildSpec, String> {
        Ok(holder_tree(ctx.module(), Arc::new(|_| Ok(()))))
    }
}
