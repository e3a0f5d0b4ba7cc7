// Loaded between require.js and the ipywidgets bundle (see _config.yml), on pages with widgets.
(function () {
  // The bundle loads its fonts and chunks from beside its own module URL, which require.js would
  // put under the page's folder: point that module at the copy served with the book.
  var dist = new URL("vendor/html-manager", document.currentScript.src).href;
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": dist } });

  // The bundle typesets widget labels with MathJax 2's MathJax.Hub.Queue; the book ships
  // MathJax 3, so forward those calls once MathJax 3 has loaded (it is deferred).
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.MathJax || window.MathJax.Hub) return;
    window.MathJax.Hub = {
      Queue: function (command) {
        var element = command && command[2];
        if (window.MathJax.startup) {
          window.MathJax.startup.promise.then(function () {
            return window.MathJax.typesetPromise(element ? [element] : undefined);
          });
        }
      },
    };
  });
})();
