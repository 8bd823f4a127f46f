//! `wsgi.file_wrapper`: iterates a file in blocks, and lets the server send a real file with
//! sendfile(2) when the application returns the wrapper itself (plain TCP only).

use pyo3::prelude::*;

#[pyclass(module = "stogie._core", name = "FileWrapper")]
pub struct FileWrapper {
    pub(crate) filelike: Py<PyAny>,
    block_size: usize,
}

/// A file the server can send with sendfile(2): descriptor, start offset, bytes left.
pub struct SendableFile {
    pub fd: i32,
    pub offset: u64,
    pub len: u64,
}

impl FileWrapper {
    /// The file behind the wrapper, if it is a regular file with a descriptor.
    pub fn sendable(&self, py: Python<'_>) -> Option<SendableFile> {
        let file = self.filelike.bind(py);
        let fd: i32 = file.call_method0("fileno").ok()?.extract().ok()?;
        let offset: u64 = file.call_method0("tell").ok()?.extract().ok()?;
        // SAFETY: fstat on a descriptor the file object owns; `stat` is plain data.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut stat) } != 0
            || (stat.st_mode & libc::S_IFMT) != libc::S_IFREG
        {
            return None;
        }
        let size = stat.st_size.max(0) as u64;
        Some(SendableFile {
            fd,
            offset,
            len: size.saturating_sub(offset),
        })
    }
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size=8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        Ok(if data.len()? == 0 {
            None
        } else {
            Some(data.unbind())
        })
    }

    /// Closes the wrapped file (PEP 3333: the server calls this like any result's close()).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let file = self.filelike.bind(py);
        if file.hasattr("close")? {
            file.call_method0("close")?;
        }
        Ok(())
    }
}
