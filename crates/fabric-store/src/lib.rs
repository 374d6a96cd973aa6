//! The storage trait of the Execution Fabric.
